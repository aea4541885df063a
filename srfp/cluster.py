"""Connecting to Ray: a cluster's address when given, else a local Ray started for this run.

A local Ray listens on the loopback interface only (GCS, raylet, workers, agents, the metrics endpoint and
the dashboard), so nothing of it can be reached from the network. Token authentication (on by default
since Ray 2.60) stays on all the same: other users of the machine can reach the loopback. Ray keeps the
local token in ``~/.ray/auth_token``; the dashboard (http://127.0.0.1:8265) asks for it and its API takes it
as ``Authorization: Bearer <token>``. Set ``RAY_AUTH_MODE=disabled`` yourself only on a
machine no one else can reach.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray._private import ray_constants


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray with its dashboard."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    job = {"log_to_driver": True, "runtime_env": {"env_vars": {**parquet_without_footer_actors(), **quiet_progress()}}}
    if address:
        ray.init(address=address, **job)
        return
    with on_loopback():
        context = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", **job)
    print(f"local Ray started; dashboard: http://{context.dashboard_url} (token: ~/.ray/auth_token)")


@contextmanager
def on_loopback() -> Iterator[None]:
    """While a local Ray starts, its node's address is 127.0.0.1, so that every Ray process binds its ports to
    the loopback interface. Ray has no option for this on Linux (``ray.init(_node_ip_address="127.0.0.1")``
    and ``ray start --node-ip-address`` replace the loopback by the machine's address); its single-machine
    mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) does it, but Ray reads that variable once, on import, into
    the constant set here. The constant is restored once the node is up, as joining a cluster later in the
    same process needs the machine's address."""
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode


def parquet_without_footer_actors() -> dict[str, str]:
    """The environment of this run's driver and Ray workers: Ray Data's Parquet reader V2 (the default in Ray 2.60)
    reads a dataset's footers in a pool of actors started anew for every read, each a new Python process: 32 by
    default (about 3 s of CPU each), and with one the read still waits 3.5 s for it on an idle 2-core machine and 7
    to 16 s on a busy one. A classifier reads its shards several times per task (training crops of each epoch,
    test predictions), so srfp reads Parquet with Ray Data's reader V1, which reads the footers in its read tasks.
    Measured on the smoke root: ``classify`` 337 s with one footer actor, 239 s with V1. ``RAY_DATA_USE_DATASOURCE_V2``
    set by the user wins."""
    import ray.data

    reader = "RAY_DATA_USE_DATASOURCE_V2"
    version = os.environ.setdefault(reader, "0")
    ray.data.DataContext.get_current().use_datasource_v2 = version not in ("0", "false", "False")
    return {reader: version}


def quiet_progress() -> dict[str, str]:
    """The environment of this run's Ray workers: without a terminal to draw on (a log file, CI), Ray Data's
    progress bars are off, on the driver and in every worker, whose bars would otherwise reach the log as
    hundreds of thousands of redrawn lines; the stages print their own progress."""
    if sys.stdout.isatty():
        return {}
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
