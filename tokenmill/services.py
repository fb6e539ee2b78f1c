"""Local Prefect and MLflow servers for one project folder: ``tokenmill up`` / ``down`` / ``status``.

Everything lives under ``<home>/services/`` (``home``: ``$TOKENMILL_HOME``, else ``<cwd>/.tokenmill``)::

    services.json          what is running (below)
    prefect/               PREFECT_HOME and prefect.db (SQLite)
    mlflow/                mlflow.db (SQLite) and artifacts/
    logs/prefect.log, logs/mlflow.log

``services.json``::

    {"version": 1, "home": "<abs home>",
     "services": {"prefect": {"pid": int, "create_time": float, "cmd": [str, ...], "host": "127.0.0.1",
                              "port": 4200, "url": "http://127.0.0.1:4200", "api_url": "http://127.0.0.1:4200/api",
                              "health_url": "http://127.0.0.1:4200/api/health", "log": "<abs>/logs/prefect.log"},
                  "mlflow": {... the same keys; api_url is url, health_url <url>/health}}}

A recorded process counts only while its pid still has the recorded ``create_time``, so a pid the
system has since given to another process is never reported, nor stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import psutil

from tokenmill.core.local_services import (
    SERVICES,
    STATE_FILE,
    discover,
    healthy,
    read_state,
    recorded_process,
    service_urls,
    services_home,
    state_root,
)

__all__ = ["SERVICES", "ServiceError", "discover", "down", "services_home", "status", "up"]
_PORT_OPTION = {"prefect": "--prefect-port", "mlflow": "--mlflow-port"}


class ServiceError(RuntimeError):
    """A service could not be started, or a port it needs is taken."""


def up(
    home: str | Path,
    host: str = "127.0.0.1",
    prefect_port: int = 4200,
    mlflow_port: int = 5000,
    timeout: float = 180,
    log: Callable[[str], None] = print,
) -> dict:
    """Start Prefect and MLflow in the background and wait until both answer their health checks.

    Services that ``services.json`` records as alive are reused, not started again. Raises
    ``ServiceError`` if a port is taken, or if a service exits or is not healthy within ``timeout``
    seconds (what this call started is stopped again; the message ends with the log's last lines).
    Returns ``{"prefect_ui", "prefect_api", "mlflow"}`` URLs and ``"started"``: the names started now.
    """
    ports = {"prefect": prefect_port, "mlflow": mlflow_port}
    for name, port in ports.items():
        if not 0 < port < 65536:
            raise ServiceError(f"{name} port {port} is not a valid port; choose another with {_PORT_OPTION[name]}")
    root = state_root(home)
    for sub in ("prefect", "mlflow/artifacts", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with _lock(root):  # two `up`s at once must not both start servers
        state = read_state(root)
        running = {n: rec for n, rec in state.get("services", {}).items() if n in SERVICES and recorded_process(rec)}
        to_start = [n for n in SERVICES if n not in running]
        # Alive but not answering: perhaps still starting (another `up`), so waited for, never restarted.
        pending = {n: (rec, None) for n, rec in running.items() if not healthy(rec["health_url"], 2)}
        for name, rec in running.items():
            log(
                f"tokenmill: {name} already running at {rec['url']} (pid {rec['pid']})"
                + (", waiting for it to answer" if name in pending else "")
            )
        if to_start and not _is_loopback(host):
            log(
                f"tokenmill: warning: --host {host} is not a loopback address; the servers have no authentication "
                "and anyone who can reach this machine can use them (MLflow also checks the Host header: see "
                "its --allowed-hosts)"
            )
        if len({ports[n] for n in to_start}) < len(to_start):
            raise ServiceError(f"--prefect-port and --mlflow-port are both {prefect_port}; give them different ports")
        for name in to_start:
            _check_port_free(host, ports[name], name)
        started: dict[str, tuple[dict, subprocess.Popen]] = {}
        try:
            for name in to_start:
                started[name] = _spawn(name, root, host, ports[name])
                log(f"tokenmill: starting {name} on {_hostport(host, ports[name])} (log {started[name][0]['log']})")
            # Recorded before waiting, so `tokenmill down` can stop them even if this call is interrupted.
            _write_state(root, {**running, **{n: rec for n, (rec, _) in started.items()}})
            _wait_healthy({**pending, **started}, timeout, log)
        except BaseException:
            _stop([rec for rec, _ in started.values()])
            _write_state(root, running)
            raise
        records = {**running, **{n: rec for n, (rec, _) in started.items()}}
    return {**service_urls(records), "started": list(started)}


def down(home: str | Path, grace: float = 10.0, log: Callable[[str], None] = print) -> list[str]:
    """Stop the processes ``services.json`` records (each with its children) and remove the file.

    SIGTERM first, SIGKILL for whatever is left after ``grace`` seconds. Returns the names of the
    services that were running and are now stopped; stale records are dropped silently.
    """
    root = state_root(home)
    recs = read_state(root).get("services", {})
    stopped = [name for name, ran in zip(recs, _stop(list(recs.values()), grace)) if ran]
    for name in stopped:
        log(f"tokenmill: stopped {name} (pid {recs[name]['pid']})")
    with contextlib.suppress(FileNotFoundError):
        (root / STATE_FILE).unlink()
    return stopped


def status(home: str | Path, timeout: float = 2.0) -> dict:
    """``{name: {"state": "running" | "unhealthy" | "stopped", "url", "api_url", "pid", "log"}}`` per service.

    ``unhealthy``: the recorded process is alive but its health check fails. ``stopped`` has
    ``url``, ``api_url`` and ``pid`` set to None.
    """
    recs = read_state(state_root(home)).get("services", {})
    out = {}
    for name in SERVICES:
        rec = recs.get(name)
        if rec is None or recorded_process(rec) is None:
            out[name] = {
                "state": "stopped",
                "url": None,
                "api_url": None,
                "pid": None,
                "log": rec.get("log") if rec else None,
            }
        else:
            state = "running" if healthy(rec["health_url"], timeout) else "unhealthy"
            out[name] = {
                "state": state,
                "url": rec["url"],
                "api_url": rec["api_url"],
                "pid": rec["pid"],
                "log": rec["log"],
            }
    return out


def describe(urls: dict) -> str:
    """The URLs and the ``export`` lines another shell needs, as printed by the CLI."""
    return (
        f"  Prefect UI   {urls['prefect_ui']}\n"
        f"  Prefect API  {urls['prefect_api']}\n"
        f"  MLflow UI    {urls['mlflow']}\n\n"
        "Other shells (or commands run outside this folder) can use them with:\n"
        f"  export PREFECT_API_URL={urls['prefect_api']}\n"
        f"  export MLFLOW_TRACKING_URI={urls['mlflow']}"
    )


# --- internals ---------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostport(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # listens everywhere; this machine reaches it on loopback
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.contextmanager
def _lock(root: Path):
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _write_state(root: Path, records: dict) -> None:
    path = root / STATE_FILE
    if not records:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": 1, "home": str(root.parent), "services": records}, indent=2) + "\n")
    tmp.replace(path)  # atomic: readers never see half a file


def _check_port_free(host: str, port: int, name: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As uvicorn does: a port whose old connections linger in TIME_WAIT is free to listen on.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServiceError(
                f"cannot start {name}: port {port} on {host} is not available ({e.strerror}); "
                f"stop what uses it or choose another port with {_PORT_OPTION[name]}"
            ) from None


def _command(name: str, root: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    bindir = Path(sys.executable).parent  # this environment's servers, not whatever is on PATH
    if name == "prefect":
        home = root / "prefect"
        return (
            [str(bindir / "prefect"), "server", "start", "--host", host, "--port", str(port)],
            {
                "PREFECT_HOME": str(home),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
                # The UI asks this URL for its API; left alone it assumes port 4200.
                "PREFECT_UI_API_URL": f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/api",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # On a busy SQLite store the server answers 503 ("try again") and the UI only says
                # "Something went wrong"; this puts the reason (database is locked) in prefect.log.
                "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
            },
        )
    mlflow = root / "mlflow"
    return (
        [
            str(bindir / "mlflow"),
            "server",
            "--host",
            host,
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{mlflow / 'mlflow.db'}",
            "--artifacts-destination",
            str(mlflow / "artifacts"),
            "--workers",
            "1",
        ],
        {"MLFLOW_DISABLE_TELEMETRY": "true"},
    )


def _spawn(name: str, root: Path, host: str, port: int) -> tuple[dict, subprocess.Popen]:
    cmd, env = _command(name, root, host, port)
    if not Path(cmd[0]).is_file():
        raise ServiceError(f"{cmd[0]} not found: install {name} into this environment ({sys.prefix})")
    log_path = root / "logs" / f"{name}.log"
    with open(log_path, "ab") as out:  # appended: an earlier run's failure stays readable
        out.write(f"\n=== tokenmill up {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n".encode())
        out.flush()
        # Own session: the server outlives this command and a Ctrl-C in its terminal.
        proc = subprocess.Popen(
            cmd,
            cwd=root / name,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://{_hostport(host, port)}"
    rec = {
        "pid": proc.pid,
        "create_time": psutil.Process(proc.pid).create_time(),
        "cmd": cmd,
        "host": host,
        "port": port,
        "url": base,
        "api_url": f"{base}/api" if name == "prefect" else base,
        "health_url": f"{base}/api/health" if name == "prefect" else f"{base}/health",
        "log": str(log_path),
    }
    return rec, proc


def _wait_healthy(
    services: dict[str, tuple[dict, subprocess.Popen | None]], timeout: float, log: Callable[[str], None]
) -> None:
    start = time.monotonic()
    waiting = dict(services)
    while waiting:
        for name, (rec, proc) in list(waiting.items()):
            if healthy(rec["health_url"], timeout=2):
                log(f"tokenmill: {name} ready ({time.monotonic() - start:.1f} s)")
                del waiting[name]
                continue
            exited = proc.poll() is not None if proc else recorded_process(rec) is None
            if exited:
                code = f" with code {proc.returncode}" if proc else ""
                raise ServiceError(
                    f"{name} exited{code} while starting; last lines of {rec['log']}:\n" + _tail(rec["log"])
                )
        if not waiting:
            break
        if time.monotonic() - start > timeout:
            name, (rec, _) = next(iter(waiting.items()))
            raise ServiceError(
                f"{name} was not healthy at {rec['health_url']} after {timeout:.0f} s "
                f"(raise --timeout on a slow machine); last lines of {rec['log']}:\n" + _tail(rec["log"])
            )
        time.sleep(0.5)


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return "(no log)"


def _stop(records: list[dict], grace: float = 10.0) -> list[bool]:
    """Terminate each recorded process with its children, all at once; per record, whether it was running."""
    procs, was_running = [], []
    for rec in records:
        proc = recorded_process(rec)
        was_running.append(proc is not None)
        if proc is None:
            continue
        procs.append(proc)
        # Collected before any signal: once the parent is gone they are no longer its children.
        with contextlib.suppress(psutil.Error):
            procs.extend(proc.children(recursive=True))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return was_running
