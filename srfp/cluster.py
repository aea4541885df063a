"""Connecting to Ray: a cluster's address when given, else a local Ray started for this run.

Token authentication (on by default since Ray 2.60) stays on, for a local Ray too: its services listen on
every interface, so turning authentication off would open the machine to anyone on its network. Ray
keeps the local token in ``~/.ray/auth_token``; the dashboard (http://127.0.0.1:8265) asks for it and its
API takes it as ``Authorization: Bearer <token>``. Set ``RAY_AUTH_MODE=disabled`` yourself only on a
machine no one else can reach.
"""

from __future__ import annotations

import os
import sys

import ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray with its dashboard."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    job = {"log_to_driver": True, "runtime_env": {"env_vars": quiet_progress()}}
    if address:
        ray.init(address=address, **job)
        return
    context = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", **job)
    print(f"local Ray started; dashboard: http://{context.dashboard_url} (token: ~/.ray/auth_token)")


def quiet_progress() -> dict[str, str]:
    """The environment of this run's Ray workers: without a terminal to draw on (a log file, CI), Ray Data's
    progress bars are off, on the driver and in every worker, whose bars would otherwise reach the log as
    hundreds of thousands of redrawn lines; the stages print their own progress."""
    if sys.stdout.isatty():
        return {}
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
