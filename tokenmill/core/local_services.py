"""Where the local servers of ``tokenmill up`` are, read from ``<home>/services/services.json``.

The read-only half of ``tokenmill.services`` (which starts and stops them): the environment of every
entry point uses it to find running servers, so it lives on the ground floor. A recorded process counts
only while its pid still has the recorded ``create_time``, so a reused pid is never reported.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import psutil

SERVICES = ("prefect", "mlflow")
STATE_FILE = "services.json"


def services_home() -> Path:
    """``$TOKENMILL_HOME`` if set, else ``<cwd>/.tokenmill`` (absolute; nothing is created)."""
    env = os.environ.get("TOKENMILL_HOME")
    return Path(env).expanduser().resolve() if env else Path.cwd().resolve() / ".tokenmill"


def discover(home: str | Path, timeout: float = 1.0) -> dict | None:
    """``{"prefect_ui", "prefect_api", "mlflow"}`` if both recorded services are alive and healthy, else None.

    Cheap when nothing was started: without ``services.json`` no process or network call is made.
    """
    path = state_root(home) / STATE_FILE
    if not path.is_file():
        return None
    recs = read_state(path.parent).get("services", {})
    if any(
        n not in recs or not recorded_process(recs[n]) or not healthy(recs[n]["health_url"], timeout) for n in SERVICES
    ):
        return None
    return service_urls(recs)


def state_root(home: str | Path) -> Path:
    return Path(home).expanduser().resolve() / "services"


def service_urls(recs: dict) -> dict:
    return {
        "prefect_ui": recs["prefect"]["url"],
        "prefect_api": recs["prefect"]["api_url"],
        "mlflow": recs["mlflow"]["url"],
    }


def read_state(root: Path) -> dict:
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # a half-written or hand-edited file counts as empty
        return {}
    return state if isinstance(state, dict) and isinstance(state.get("services"), dict) else {}


def recorded_process(rec: dict) -> psutil.Process | None:
    """The recorded process if it still runs: same pid *and* start time (pids get reused)."""
    try:
        proc = psutil.Process(int(rec["pid"]))
        if abs(proc.create_time() - float(rec["create_time"])) > 0.05:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return None
        return proc
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None


def healthy(url: str, timeout: float) -> bool:
    # No proxies: a developer's http_proxy must not intercept loopback health checks.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False
