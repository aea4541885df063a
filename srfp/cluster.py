"""Connecting to Ray: a cluster's address when given, else a local Ray started for this run.

Token authentication (on by default since Ray 2.60) stays on, for a local Ray too: its services listen on
every interface, so turning authentication off would open the machine to anyone on its network. Ray
keeps the local token in ``~/.ray/auth_token``; the dashboard (http://127.0.0.1:8265) asks for it and its
API takes it as ``Authorization: Bearer <token>``. Set ``RAY_AUTH_MODE=disabled`` yourself only on a
machine no one else can reach.
"""

from __future__ import annotations

import os

import ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray with its dashboard."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    context = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    print(f"local Ray started; dashboard: http://{context.dashboard_url} (token: ~/.ray/auth_token)")
