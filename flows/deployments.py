"""The deployments of ``prefect.yaml``, served from one process (``tokenmill serve``).

``prefect.yaml`` is the single definition: ``prefect deploy --all`` registers its deployments on a
work pool for workers, and ``serve`` turns the same entries into runner deployments that this
process runs itself (no work pool), schedules included.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import yaml

from tokenmill.core.env import REPO_ROOT

PREFECT_FILE = REPO_ROOT / "prefect.yaml"


def deployment_entries(prefect_file: str | Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments`` of a prefect.yaml, each with its full name ``<flow>/<variant>`` under ``"full_name"``."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(Path(prefect_file).read_text())
    entries = []
    for entry in spec.get("deployments") or []:
        flow = load_flow_from_entrypoint(str(REPO_ROOT / entry["entrypoint"]))
        entries.append({**entry, "flow": flow, "full_name": f"{flow.name}/{entry['name']}"})
    return entries


def select(entries: list[dict[str, Any]], patterns: list[str] | None) -> list[dict[str, Any]]:
    """The entries whose full name matches any of ``patterns`` (shell-style, e.g. ``pipeline/*``); all if none."""
    if not patterns:
        return entries
    chosen = [e for e in entries if any(fnmatch.fnmatchcase(e["full_name"], p) for p in patterns)]
    if not chosen:
        known = ", ".join(e["full_name"] for e in entries)
        raise ValueError(f"no deployment matches {', '.join(patterns)}; prefect.yaml has: {known}")
    return chosen


def runner_deployments(entries: list[dict[str, Any]], with_schedules: bool = True) -> list:
    """Runner deployments (``Flow.to_deployment``) for ``entries``, with their parameters, tags and schedules."""
    from prefect.schedules import Cron

    out = []
    for e in entries:
        schedules = (
            [
                Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
                for s in e.get("schedules") or []
                if "cron" in s
            ]
            if with_schedules
            else None
        )
        out.append(
            e["flow"].to_deployment(
                name=e["name"],
                description=e.get("description"),
                tags=e.get("tags"),
                parameters=e.get("parameters") or {},
                schedules=schedules,
            )
        )
    return out


def serve(patterns: list[str] | None = None, with_schedules: bool = True, limit: int | None = None) -> None:
    """Serve the chosen deployments until interrupted; flow runs start as subprocesses of this one."""
    if not os.environ.get("PREFECT_API_URL"):
        raise RuntimeError(
            "serving deployments needs a Prefect server: start one with `tokenmill up` "
            "(or export PREFECT_API_URL=http://HOST:4200/api)"
        )
    from prefect import serve as prefect_serve

    chosen = select(deployment_entries(), patterns)
    _take_over_from_work_pools([e["full_name"] for e in chosen])
    os.chdir(REPO_ROOT)  # the flows' relative config paths (conf/*.yaml) are the repository's
    prefect_serve(*runner_deployments(chosen, with_schedules), limit=limit)


def _take_over_from_work_pools(names: list[str]) -> None:
    """A deployment of the same name registered on a work pool (``prefect deploy``) keeps its pool and
    pull steps when served over, and its runs then crash: replace it, saying so."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in names:
            try:
                dep = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if dep.work_pool_name:
                print(
                    f"tokenmill: {name} was deployed to work pool {dep.work_pool_name!r}; serving it here "
                    "instead (`prefect deploy` puts it back)"
                )
                client.delete_deployment(dep.id)
