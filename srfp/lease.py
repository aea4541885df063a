"""One writer per storage root and stage: a lease that a command holds while it writes a stage's files.

A stage's lease is a small JSON object in the root, ``_leases/<stage>/<generation>.json``; the highest
generation is the one in force. A command takes the lease by creating the next generation with a conditional
create (:meth:`srfp.storage.Storage.create_exclusive`: a hard link locally, ``If-None-Match: *`` on S3), so
of two commands that start together exactly one succeeds; it may do so only when the lease in force is
released or expired. The holder renews its expiry every :data:`RENEW_EVERY_S` seconds from a background
thread, and marks the lease released on the way out (also on Ctrl-C or an error). A command killed outright
leaves a lease that the next command takes over at once on the same machine (its process is gone), and
elsewhere when it expires, :data:`EXPIRY_S` seconds after its last renewal.
Expiry compares the hosts' clocks, which must agree to well within a minute.

A released lease is kept, never deleted, so that generation numbers are never reused; the older ones are
deleted by the next holder.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from srfp.errors import UserError
from srfp.storage import Storage, StorageError, process_running

#: The folder of the leases in a storage root.
LEASES = "_leases"
#: How long a lease lasts after its last renewal, in seconds.
EXPIRY_S = 120
#: How often the holder renews its lease, in seconds.
RENEW_EVERY_S = 30


class StageRunning(UserError):
    """Another command holds the lease of a stage on this root."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease (no secrets: the command line of srfp holds none; keys come from the environment)."""

    stage: str
    host: str
    pid: int
    token: str
    since: str  # ISO 8601, UTC
    expires: str  # ISO 8601, UTC
    command: str
    process_space: str  # where its pid names it: see _process_space
    released: bool = False

    def live(self, now: datetime) -> bool:
        """Released, expired and killed holders are not; a killed one is known at once on its own machine."""
        gone = self.process_space == _process_space() != "" and not process_running(self.pid)
        return not self.released and not gone and datetime.fromisoformat(self.expires) > now

    def describe(self) -> str:
        return (f"`{self.command}` (pid {self.pid} on {self.host}, since {_clock(self.since)}, "
                f"lease expires {_clock(self.expires)} unless renewed)")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _process_space() -> str:
    """Where a process id names one process: this boot of this machine and this pid namespace (a container
    may share the host's name but not its processes); empty where unknown (not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _clock(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


class Lease:
    """The lease of one stage on one root, held inside a ``with`` block; raises :class:`StageRunning` on entry
    when another command holds it."""

    def __init__(self, storage: Storage, stage: str, command: str):
        self.storage, self.stage, self.folder = storage, stage, posixpath.join(LEASES, stage)
        started = _now().isoformat()
        self.holder = Holder(stage, socket.gethostname(), os.getpid(), uuid.uuid4().hex, started, started, command,
                             _process_space())
        self.generation: int | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name=f"lease-{stage}", daemon=True)

    def __enter__(self) -> "Lease":
        self._acquire()
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._renewer.join()
        if self._still_ours():
            self._write(replace(self.holder, expires=_now().isoformat(), released=True))

    def _acquire(self) -> None:
        current = latest(self.storage, self.stage)
        if current and current[1].live(_now()):
            raise self._refusal(current[1])
        self.generation = current[0] + 1 if current else 0
        self.holder = replace(self.holder, expires=(_now() + timedelta(seconds=EXPIRY_S)).isoformat())
        if not self.storage.create_exclusive(self._name(self.generation), _encode(self.holder)):
            raise self._refusal(_read(self.storage, self._name(self.generation)))  # it started just before
        newest = latest(self.storage, self.stage)
        if newest[0] != self.generation:  # this command paused between reading and creating, and lost
            raise self._refusal(newest[1])
        for older in _generations(self.storage, self.folder):
            if older < self.generation:
                self.storage.delete(self._name(older))

    def _refusal(self, holder: Holder) -> StageRunning:
        return StageRunning(
            f"{self.stage} is already running on {self.storage.uri}: {holder.describe()}. Wait for it to finish "
            f"and run this command again; if it no longer runs (killed), this command can run at once on "
            f"its machine, and elsewhere when its lease expires, at most {EXPIRY_S} s after it stopped")

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                if not self._still_ours():
                    print(f"warning: the lease of {self.stage} on {self.storage.uri} was taken over; another "
                          "command may now write this stage too", file=sys.stderr)
                    return
                self.holder = replace(self.holder, expires=(_now() + timedelta(seconds=EXPIRY_S)).isoformat())
                self._write(self.holder)
            except (OSError, StorageError) as error:  # storage unreachable for a moment: the next renewal tries again
                print(f"warning: cannot renew the lease of {self.stage} on {self.storage.uri}: {error}",
                      file=sys.stderr)

    def _still_ours(self) -> bool:
        current = latest(self.storage, self.stage)
        return bool(current) and current[0] == self.generation and current[1].token == self.holder.token

    def _write(self, holder: Holder) -> None:
        self.storage.write_bytes(self._name(self.generation), _encode(holder))

    def _name(self, generation: int) -> str:
        return posixpath.join(self.folder, f"{generation}.json")


def latest(storage: Storage, stage: str) -> tuple[int, Holder] | None:
    """The lease in force for a stage (its generation and holder), live or not; None if none was ever taken."""
    folder = posixpath.join(LEASES, stage)
    generations = _generations(storage, folder)
    if not generations:
        return None
    return generations[-1], _read(storage, posixpath.join(folder, f"{generations[-1]}.json"))


def running(storage: Storage) -> list[Holder]:
    """The live leases of a root, one per stage being written now."""
    now = _now()
    current = (latest(storage, posixpath.basename(folder)) for folder in storage.list_dirs(LEASES))
    return [holder for _, holder in filter(None, current) if holder.live(now)]


def _generations(storage: Storage, folder: str) -> list[int]:
    names = (posixpath.basename(path).removesuffix(".json") for path in storage.list(folder))
    return sorted(int(name) for name in names if name.isdigit())


def _read(storage: Storage, relative: str) -> Holder:
    return Holder(**json.loads(storage.read_text(relative)))


def _encode(holder: Holder) -> bytes:
    return json.dumps(asdict(holder), indent=1).encode("utf-8")
