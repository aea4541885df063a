"""Connecting to Ray: a cluster's address when given, else a local Ray started for this run.

Token authentication (on by default since Ray 2.60) is a cluster's business: srfp connects with whatever
the cluster requires (``RAY_AUTH_MODE`` and the token in the environment). A local Ray that srfp starts
itself listens on loopback only, so srfp turns token authentication off for it unless ``RAY_AUTH_MODE``
is already set; the dashboard is then at http://127.0.0.1:8265 without a token.
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
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    context = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                       _node_ip_address="127.0.0.1", log_to_driver=True)
    print(f"local Ray started; dashboard: http://{context.dashboard_url}")
