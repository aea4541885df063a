"""The fast paths of SISR training: chosen on CUDA only, and faithful to the step they replace.

No GPU here: the CUDA paths are shown chosen (options, optimizer flags, Tune's GPU shares), the CUDA graph's
bookkeeping runs against a recording stand-in for torch.cuda's graph API, and the CPU path stays PyTorch's
default (bit-exact resumption is in test_train.py).
"""

import threading

import pytest
import torch
from ray import tune

from conftest import smoke_grid
from srfp.gridspec import GridError, load_grid
from srfp.sisr.acceleration import CapturedStep, StepOptions, adam, load_optimizer, step_options
from srfp.sisr.data import BatchPrefetcher
from srfp.sisr.tuning import smallest_trial, trial_resources
from srfp.spec import SISRSpec


def test_cuda_takes_every_fast_path_and_the_cpu_none():
    assert step_options(torch.device("cpu")) == StepOptions(False, False, False)
    assert step_options(torch.device("cuda")) == StepOptions(fused_optimizer=True, channels_last=True, cuda_graphs=True)
    assert step_options(torch.device("cuda"), cuda_graphs=False).cuda_graphs is False


def test_the_optimizer_is_fused_and_capturable_on_cuda_and_pytorchs_default_on_the_cpu():
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    cpu = adam(parameters, 1e-4, (0.9, 0.999), step_options(torch.device("cpu")))
    default = torch.optim.Adam(parameters, lr=1e-4)
    assert {k: cpu.defaults[k] for k in ("fused", "capturable", "foreach")} == \
        {k: default.defaults[k] for k in ("fused", "capturable", "foreach")}
    cuda = adam(parameters, 1e-4, (0.9, 0.999), step_options(torch.device("cuda")))
    assert cuda.defaults["fused"] is True and cuda.defaults["capturable"] is True


def _stepped_adam(**flags) -> tuple[torch.nn.Parameter, torch.optim.Adam]:
    parameter = torch.nn.Parameter(torch.arange(4.0))
    optimizer = torch.optim.Adam([parameter], lr=0.1, **flags)
    parameter.grad = torch.ones(4)
    optimizer.step()
    return parameter, optimizer


def test_an_optimizer_state_saved_fused_loads_into_the_cpus_default_implementation():
    _, fused = _stepped_adam(fused=True)  # fused Adam also runs on the CPU; on CUDA it is also capturable
    saved = fused.state_dict()
    saved["param_groups"][0]["capturable"] = True
    parameter, plain = _stepped_adam()
    load_optimizer(plain, saved)
    group = plain.param_groups[0]
    assert (group["fused"], group["capturable"], group["foreach"]) == (None, False, None)
    step = plain.state[parameter]["step"]
    assert step.device.type == "cpu" and step.dtype == torch.float32 and float(step) == 1
    plain.step()  # PyTorch's default implementation accepts the state
    assert float(plain.state[parameter]["step"]) == 2


def test_moments_saved_in_another_layout_take_the_parameters_layout():
    weight = torch.nn.Parameter(torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last))
    saved = torch.optim.Adam([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    saved.step()
    contiguous = torch.nn.Parameter(weight.detach().contiguous())
    optimizer = torch.optim.Adam([contiguous], lr=0.1)
    load_optimizer(optimizer, saved.state_dict())
    moment = optimizer.state[contiguous]["exp_avg"]
    assert moment.is_contiguous() and torch.equal(moment, saved.state[weight]["exp_avg"])


def test_an_optimizer_state_saved_on_the_cpu_gets_its_steps_on_the_parameters_device_when_fused():
    _, plain = _stepped_adam()
    parameter, fused = _stepped_adam(fused=True)
    load_optimizer(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"] is True
    assert fused.state[parameter]["step"].device == parameter.device


class _Sampler:
    def __init__(self, fail_at: int | None = None):
        self.fail_at, self.threads = fail_at, set()

    def batch(self, iteration: int):
        self.threads.add(threading.current_thread().name)
        if iteration == self.fail_at:
            raise ValueError(f"bad image at {iteration}")
        return torch.full((1, 3, 2, 2), float(iteration)), torch.full((1, 3, 4, 4), float(iteration))


def test_prefetched_batches_are_the_samplers_in_order_made_in_another_thread():
    sampler = _Sampler()
    with BatchPrefetcher(sampler, 3, 9) as batches:
        seen = [(iteration, float(lr[0, 0, 0, 0]), float(hr[0, 0, 0, 0])) for iteration, lr, hr in batches]
    assert seen == [(i, float(i), float(i)) for i in range(3, 9)]
    assert sampler.threads == {"srfp-batches"}


def test_a_sampler_error_reaches_the_training_loop_and_leaving_early_stops_the_thread():
    with pytest.raises(ValueError, match="bad image at 4"):
        with BatchPrefetcher(_Sampler(fail_at=4), 0, 10) as batches:
            for _ in batches:
                pass
    prefetcher = BatchPrefetcher(_Sampler(), 0, 1000, depth=2)
    with prefetcher as batches:
        next(iter(batches))
    assert not prefetcher._thread.is_alive()


class _RecordingGraphs:
    """torch.cuda's stream and graph API as a recorder: capture runs the step once, on the graph's inputs,
    only to record it (as a real capture does, computing nothing the test reads); replay counts."""

    def __init__(self, monkeypatch, events):
        class Graph:
            def replay(self):
                events.append("replay")

        class Capture:
            def __init__(self, graph):
                events.append("capture")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        class Stream:
            def wait_stream(self, other):
                pass

        class StreamContext:
            def __init__(self, stream):
                pass

            def __enter__(self):
                events.append("side stream")

            def __exit__(self, *exc):
                return False

        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", Capture)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "stream", StreamContext)
        monkeypatch.setattr(torch.cuda, "current_stream", Stream)


def test_the_step_is_captured_after_eager_warm_up_steps_and_captured_again_when_the_learning_rate_changes(
        monkeypatch):
    events, learning_rate, inputs = [], [1e-3], []

    def optimise(lr, hr):
        events.append("step")
        inputs.append(lr)
        return {"total": lr.sum()}

    _RecordingGraphs(monkeypatch, events)
    step = CapturedStep(optimise, lambda: ("l1", learning_rate[0]), warmup_steps=2)
    batches = [torch.full((1, 3, 2, 2), float(i)) for i in range(6)]
    for index, batch in enumerate(batches):
        if index == 4:
            learning_rate[0] = 5e-4  # a scheduler milestone
        step(batch, batch * 2)
    assert events == ["side stream", "step", "side stream", "step",  # two eager warm-up steps
                      "capture", "step", "replay", "replay",         # captured once, replayed each iteration
                      "side stream", "step", "side stream", "step"]  # the learning rate changed: warm up again
    captured_lr, graph_lr = inputs[2], step.inputs[0]
    assert graph_lr is captured_lr  # the graph reads its own input tensors ...
    assert torch.equal(graph_lr, batches[3])  # ... into which each replayed batch is copied


def test_trials_of_an_architecture_share_a_gpu_as_the_grid_says():
    grid = load_grid("paper")
    grid = smoke_grid(trial=grid.training.trial, trials_per_gpu={"RCAN": 8, "RDN": 2})
    rcan, edsr = SISRSpec.from_id("RCAN-div2k-x4-L1-s1"), SISRSpec.from_id("EDSR-div2k-x4-L1-s1")
    request = trial_resources(grid)
    assert request({"model_id": rcan.model_id}) == tune.PlacementGroupFactory([{"CPU": 1.0, "GPU": 0.125}])
    assert request({"model_id": edsr.model_id}) == tune.PlacementGroupFactory([{"CPU": 8.0, "GPU": 1.0}])
    assert grid.training.trial_of("RDN").gpu_hours == grid.training.trial.gpu_hours / 2
    assert smallest_trial(grid, [rcan, edsr]).gpus == 0.125


def test_a_cpu_trial_asks_for_no_gpu():
    grid = load_grid("smoke")
    assert trial_resources(grid)({"model_id": "RCAN-div2k-x2-L1-s1"}) == tune.PlacementGroupFactory([{"CPU": 1.0}])


@pytest.mark.parametrize("value, message", [({"VDSR": 2}, "training.trials_per_gpu.VDSR: unknown architecture"),
                                            ({"RCAN": 0}, "training.trials_per_gpu.RCAN: 0 is not allowed")])
def test_a_bad_gpu_share_names_the_field(tmp_path, value, message):
    import yaml

    grid = yaml.safe_load(open(load_grid("smoke").source))
    grid["training"]["trials_per_gpu"] = value
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError, match=message):
        load_grid(tmp_path / "grid.yaml")

