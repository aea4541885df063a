"""One writer per root and stage: a second command writing a stage that another one is writing stops before any
work, naming the running one; a lease left by a killed command expires and is taken over; leases are released
however a command ends; local roots and S3 (moto on loopback) alike. No Ray: the stages are replaced."""

import os
import socket
import subprocess
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from srfp import grid, lease
from srfp.lease import Holder, Lease, StageRunning, latest, running
from srfp.storage import Storage

RUNNING_TRAIN = "python -m srfp.grid train --grid smoke --root the-root"


def _must_not_run(args) -> None:
    raise AssertionError("the stage ran although another command holds its lease")


def test_a_second_train_on_the_same_root_stops_before_any_work(tmp_path, monkeypatch, capsys):
    storage = Storage(tmp_path / "root")
    monkeypatch.setattr(grid, "cmd_train", _must_not_run)
    with Lease(storage, "train", RUNNING_TRAIN):
        assert grid.main(["train", "--root", storage.uri]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: train is already running on {storage.uri}: `{RUNNING_TRAIN}` "
                            f"(pid {os.getpid()} on {socket.gethostname()}, since ")
    assert f"when its lease expires, at most {lease.EXPIRY_S} s after it stopped" in error
    assert len(error.splitlines()) == 1


def test_run_takes_the_lease_of_every_stage_it_writes_and_gives_them_back_when_one_is_held(tmp_path, monkeypatch,
                                                                                            capsys):
    storage = Storage(tmp_path / "root")
    monkeypatch.setattr(grid, "cmd_run", _must_not_run)
    with Lease(storage, "classify", "python -m srfp.grid parse --all"):
        assert grid.main(["run", "--root", storage.uri]) == 2
        assert "error: classify is already running" in capsys.readouterr().err
        assert [holder.stage for holder in running(storage)] == ["classify"]  # photos, train, ... given back


def test_status_takes_no_lease_and_shows_the_running_stages(tmp_path, capsys):
    storage = Storage(tmp_path / "root")
    with Lease(storage, "superresolve", "python -m srfp.grid superresolve"):
        assert grid.main(["status", "--root", storage.uri]) == 0
    assert "running       superresolve: `python -m srfp.grid superresolve` (pid" in capsys.readouterr().out


def test_different_stages_and_roots_run_side_by_side(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(grid, "cmd_train", lambda args: ran.append(args.root))
    with Lease(Storage(tmp_path / "root"), "superresolve", "python -m srfp.grid superresolve"), \
            Lease(Storage(tmp_path / "other"), "train", RUNNING_TRAIN):
        assert grid.main(["train", "--root", str(tmp_path / "root")]) == 0
    assert ran == [str(tmp_path / "root")]


def _killed_holder(stage: str, expires_in_s: float, process_space: str) -> Holder:
    """The lease of a command that was killed: its process (a finished child of this test) is gone."""
    child = subprocess.Popen(["true"])
    child.wait()
    now = datetime.now(timezone.utc)
    return Holder(stage, socket.gethostname(), child.pid, "killed", now.isoformat(),
                  (now + timedelta(seconds=expires_in_s)).isoformat(), "python -m srfp.grid train", process_space)


def _expired_lease(storage: Storage, stage: str) -> None:
    killed = _killed_holder(stage, -1, "another machine")
    assert storage.create_exclusive(f"_leases/{stage}/0.json", lease._encode(killed))


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_killed_commands_lease_expires_and_is_taken_over(kind, tmp_path, monkeypatch, request):
    storage = Storage(tmp_path / "root" if kind == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/run")
    _expired_lease(storage, "train")
    seen = []
    monkeypatch.setattr(grid, "cmd_train", lambda args: seen.extend(running(Storage(args.root))))  # the
    # command's own Storage: it runs with the AWS keys moved out of the environment
    assert grid.main(["train", "--root", storage.uri]) == 0
    assert [(holder.stage, holder.pid) for holder in seen] == [("train", os.getpid())]  # held while it ran
    assert storage.list("_leases/train") == ["_leases/train/1.json"]  # the expired one deleted
    assert latest(storage, "train")[1].released


def test_a_killed_commands_lease_is_taken_over_at_once_on_its_machine_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grid, "cmd_train", lambda args: None)
    here, elsewhere = Storage(tmp_path / "here"), Storage(tmp_path / "elsewhere")
    here.create_exclusive("_leases/train/0.json", lease._encode(_killed_holder("train", 100, lease._process_space())))
    assert lease._process_space()  # Linux: this boot's id and this pid namespace
    assert grid.main(["train", "--root", here.uri]) == 0
    # a process of that id on another machine, or in another container of a host of the same name, may run
    elsewhere.create_exclusive("_leases/train/0.json", lease._encode(_killed_holder("train", 100, "a container")))
    assert grid.main(["train", "--root", elsewhere.uri]) == 2
    assert "error: train is already running" in capsys.readouterr().err


@pytest.mark.parametrize("ending", [RuntimeError("a bug"), KeyboardInterrupt()])
def test_the_lease_is_released_when_a_command_fails_or_is_interrupted(ending, tmp_path, monkeypatch):
    storage = Storage(tmp_path / "root")

    def stage(args):
        assert running(storage)
        raise ending

    monkeypatch.setattr(grid, "cmd_train", stage)
    with pytest.raises(type(ending)):
        grid.main(["train", "--root", storage.uri])
    assert running(storage) == []
    monkeypatch.setattr(grid, "cmd_train", lambda args: None)
    assert grid.main(["train", "--root", storage.uri]) == 0  # at once, without waiting for an expiry


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_of_commands_starting_together_exactly_one_takes_the_lease(kind, tmp_path, request):
    root = tmp_path / "root" if kind == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/run"
    contenders = 6
    start, outcomes = threading.Barrier(contenders), []

    def contend(number):
        storage = Storage(root)
        taken = Lease(storage, "train", f"command {number}")
        start.wait()
        try:
            taken.__enter__()
            outcomes.append(taken)
        except StageRunning as refusal:
            outcomes.append(refusal)

    threads = [threading.Thread(target=contend, args=(number,)) for number in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = [outcome for outcome in outcomes if isinstance(outcome, Lease)]
    assert len(holders) == 1 and len(outcomes) == contenders
    assert all(holders[0].holder.command in str(refusal) for refusal in outcomes if refusal is not holders[0])
    holders[0].__exit__(None, None, None)


def test_s3_creates_a_file_only_when_none_is_there(s3_bucket, boto3_client):
    storage = Storage(f"s3://{s3_bucket}/run")
    assert storage.create_exclusive("_leases/x/0.json", b"first")
    assert not storage.create_exclusive("_leases/x/0.json", b"second")
    assert boto3_client.get_object(Bucket=s3_bucket, Key="run/_leases/x/0.json")["Body"].read() == b"first"


def test_the_holder_renews_its_lease_until_it_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "RENEW_EVERY_S", 0.05)
    storage = Storage(tmp_path / "root")
    with Lease(storage, "train", RUNNING_TRAIN) as held:
        first = latest(storage, "train")[1].expires
        deadline = datetime.now(timezone.utc) + timedelta(seconds=10)
        while latest(storage, "train")[1].expires == first and datetime.now(timezone.utc) < deadline:
            threading.Event().wait(0.05)
        assert latest(storage, "train")[1].expires > first
        assert replace(latest(storage, "train")[1], expires=first) == replace(held.holder, expires=first)
