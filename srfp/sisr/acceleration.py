"""How a SISR training step runs fast on CUDA without changing what it computes.

On CUDA, a step is launch-bound for the deeper models (RCAN makes about 27,000 kernel calls a step), so:

- the optimizers are Adam fused into one kernel per step, and capturable (graph-safe);
- the model and its loss networks work in channels_last, the layout tensor cores prefer;
- the whole step, forward, backward and optimizer updates, is captured once as a CUDA graph and replayed
  each iteration (:class:`CapturedStep`), so that its kernels launch at once.

On the CPU none of this applies: the step is PyTorch's default, bit-reproducible as ever. The batch size,
patch sizes, losses and learning-rate schedules are the grid's whatever the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch


@dataclass(frozen=True)
class StepOptions:
    """The speed choices of one trial's device (see :func:`step_options`)."""

    fused_optimizer: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False


def step_options(device: torch.device, cuda_graphs: bool = True) -> StepOptions:
    """Every speed choice on CUDA (CUDA graphs unless the grid turns them off); none on the CPU."""
    cuda = device.type == "cuda"
    return StepOptions(fused_optimizer=cuda, channels_last=cuda, cuda_graphs=cuda and cuda_graphs)


def memory_format(options: StepOptions) -> torch.memory_format:
    """The layout of the step's tensors: channels_last, or (off) whatever layout they come in."""
    return torch.channels_last if options.channels_last else torch.preserve_format


def adam(parameters: Iterable[torch.nn.Parameter], learning_rate: float, betas: tuple[float, float],
         options: StepOptions) -> torch.optim.Adam:
    """Adam; fused and capturable where ``options`` say so, else PyTorch's default implementation."""
    fused = options.fused_optimizer
    return torch.optim.Adam(parameters, lr=learning_rate, betas=betas, fused=fused or None,
                            capturable=fused or options.cuda_graphs)


#: The implementation flags of an optimizer's groups: the device's, never a checkpoint's.
_IMPLEMENTATION = ("fused", "capturable", "foreach")


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an optimizer's state saved on any device into one built for this device.

    A checkpoint keeps the implementation flags of the device that wrote it (fused and capturable on CUDA);
    they are put back to this optimizer's own. Each parameter's step count goes where this implementation
    keeps it (on the parameter's device when fused or capturable, else on the CPU), and its moments take the
    parameter's layout (channels_last on CUDA, contiguous on the CPU), as a fused kernel expects."""
    own = {key: optimizer.defaults[key] for key in _IMPLEMENTATION if key in optimizer.defaults}
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group.update(own)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for parameter in group["params"]:
            parameter_state = optimizer.state.get(parameter, {})
            for key, value in parameter_state.items():
                if key == "step":
                    parameter_state[key] = value.to(parameter.device if on_device else "cpu", torch.float32)
                elif value.shape == parameter.shape and value.stride() != parameter.stride():
                    parameter_state[key] = torch.empty_like(parameter).copy_(value)


def learning_rates(optimizers: Iterable[torch.optim.Optimizer | None]) -> tuple[float, ...]:
    return tuple(float(group["lr"]) for optimizer in optimizers if optimizer is not None
                 for group in optimizer.param_groups)


class CapturedStep:
    """A training step captured as one CUDA graph and replayed, for as long as nothing it bakes in changes.

    ``optimise(lr, hr)`` runs the step's forward, backward and optimizer updates (no scheduler, no CPU
    synchronisation) and returns its loss terms as tensors. A graph bakes in the learning rates and which
    optimizers step, so ``signature()`` (the phase and the current learning rates) is checked each
    iteration: when it changes (a scheduler milestone, the adversarial phase's start), the next
    ``warmup_steps`` iterations run eagerly on a side stream (real training steps, which also create any
    new optimizer's state), then the step is captured anew. Capture itself computes nothing: the captured
    iteration is then replayed like the others.
    """

    def __init__(self, optimise: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                 signature: Callable[[], tuple], warmup_steps: int = 3):
        self.optimise, self.signature, self.warmup_steps = optimise, signature, warmup_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_signature: tuple | None = None
        self.eager_left = warmup_steps
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.terms: dict[str, torch.Tensor] = {}

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        signature = self.signature()
        if signature != self.captured_signature:
            self.graph, self.captured_signature, self.eager_left = None, signature, self.warmup_steps
        if self.eager_left:
            self.eager_left -= 1
            return self._eager(lr, hr)
        if self.graph is None:
            self._capture(lr, hr)
        for static, batch in zip(self.inputs, (lr, hr)):
            static.copy_(batch, non_blocking=True)
        self.graph.replay()
        return self.terms

    def _eager(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            terms = self.optimise(lr, hr)
        torch.cuda.current_stream().wait_stream(side)
        return terms

    def _capture(self, lr: torch.Tensor, hr: torch.Tensor) -> None:
        self.inputs = (lr.clone(), hr.clone())  # same device, shape and layout as every batch
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.terms = self.optimise(*self.inputs)
