"""`tokenmill up / down / status`: real Prefect and MLflow servers on free loopback ports, started once.

The module's servers start from a home holding a stale ``services.json`` (a dead pid) and are
stopped by the last test (``down``); the fixture's teardown stops them whatever happens. The tests
that use them are marked ``slow`` (starting both takes tens of seconds); the others run in ``make check``.
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from tokenmill import services
from tokenmill.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:  # all bound at once, so the n ports differ
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(url: str) -> bytes:
    with _NO_PROXY.open(url, timeout=10) as resp:
        assert resp.status == 200
        return resp.read()


def _write_stale_state(home: Path) -> int:
    """A services.json whose processes are gone: the pid of an exited process, with its real start time."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    create_time = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait()
    recs = {
        name: {
            "pid": proc.pid,
            "create_time": create_time,
            "cmd": ["gone"],
            "host": "127.0.0.1",
            "port": 1,
            "url": "http://127.0.0.1:1",
            "api_url": "http://127.0.0.1:1",
            "health_url": "http://127.0.0.1:1/health",
            "log": str(home / "gone.log"),
        }
        for name in services.SERVICES
    }
    root = home / "services"
    root.mkdir(parents=True, exist_ok=True)
    (root / "services.json").write_text(json.dumps({"version": 1, "home": str(home), "services": recs}))
    return proc.pid


def _recorded(home: Path) -> dict:
    return json.loads((home / "services" / "services.json").read_text())["services"]


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    home = tmp_path_factory.mktemp("tokenmill-home")
    stale_pid = _write_stale_state(home)
    before = services.status(home)  # what the stale file reads as, before `up` replaces it
    prefect_port, mlflow_port = _free_ports(2)
    try:
        urls = services.up(home, prefect_port=prefect_port, mlflow_port=mlflow_port, timeout=300)
        yield SimpleNamespace(
            home=home, urls=urls, prefect_port=prefect_port, mlflow_port=mlflow_port, stale_pid=stale_pid, before=before
        )
    finally:
        services.down(home)


@pytest.fixture
def cli_home(svc):
    """TOKENMILL_HOME at the module's home for CLI calls; the whole environment restored afterwards
    (main() runs prepare_environment, which would export the servers' URLs into this process)."""
    saved = dict(os.environ)
    os.environ["TOKENMILL_HOME"] = str(svc.home)
    yield svc
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow
def test_up_starts_both_servers_and_they_answer(svc):
    assert svc.urls == {
        "prefect_ui": f"http://127.0.0.1:{svc.prefect_port}",
        "prefect_api": f"http://127.0.0.1:{svc.prefect_port}/api",
        "mlflow": f"http://127.0.0.1:{svc.mlflow_port}",
        "started": ["prefect", "mlflow"],
    }
    assert json.loads(_get(svc.urls["prefect_api"] + "/health")) is True
    assert _get(svc.urls["mlflow"] + "/health").strip() == b"OK"
    found = json.loads(_get(svc.urls["mlflow"] + "/api/2.0/mlflow/experiments/search?max_results=10"))
    assert "Default" in {e["name"] for e in found["experiments"]}
    root = svc.home / "services"
    assert (root / "prefect" / "prefect.db").is_file() and (root / "mlflow" / "mlflow.db").is_file()
    assert (root / "logs" / "prefect.log").stat().st_size and (root / "logs" / "mlflow.log").stat().st_size


@pytest.mark.slow
def test_prefect_server_logs_why_it_answered_busy(svc):
    """A 503 from a locked SQLite store shows in the UI only as "Something went wrong": the log must say why."""
    settings = json.loads(_get(svc.urls["prefect_api"] + "/admin/settings"))
    assert settings["server"]["log_retryable_errors"] is True


@pytest.mark.slow
def test_stale_state_file_read_as_stopped_and_replaced(svc):
    assert {name: st["state"] for name, st in svc.before.items()} == {"prefect": "stopped", "mlflow": "stopped"}
    assert all(rec["pid"] != svc.stale_pid for rec in _recorded(svc.home).values())


@pytest.mark.slow
def test_servers_listen_on_loopback_only(svc):
    listening = set()
    for rec in _recorded(svc.home).values():
        for proc in _tree(rec["pid"]):
            listening |= {
                (c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
            }
    assert {port for _, port in listening} >= {svc.prefect_port, svc.mlflow_port}
    assert {ip for ip, _ in listening} == {"127.0.0.1"}


@pytest.mark.slow
def test_second_up_reuses_the_running_servers(svc, capsys):
    pids = {name: rec["pid"] for name, rec in _recorded(svc.home).items()}
    urls = services.up(svc.home, prefect_port=svc.prefect_port, mlflow_port=svc.mlflow_port)
    assert urls["started"] == [] and urls["mlflow"] == svc.urls["mlflow"]
    assert {name: rec["pid"] for name, rec in _recorded(svc.home).items()} == pids
    assert "already running" in capsys.readouterr().out


@pytest.mark.slow
def test_status_and_discover_report_running_servers(svc):
    st = services.status(svc.home)
    assert {name: s["state"] for name, s in st.items()} == {"prefect": "running", "mlflow": "running"}
    assert st["mlflow"]["url"] == svc.urls["mlflow"] and st["prefect"]["api_url"] == svc.urls["prefect_api"]
    assert services.discover(svc.home) == {k: v for k, v in svc.urls.items() if k != "started"}


@pytest.mark.slow
def test_cli_status_and_up_print_urls_and_exports(cli_home, capsys):
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "prefect  running" in out and f"export MLFLOW_TRACKING_URI={cli_home.urls['mlflow']}" in out
    assert f"export PREFECT_API_URL={cli_home.urls['prefect_api']}" in out
    assert main(["up", "--prefect-port", str(cli_home.prefect_port), "--mlflow-port", str(cli_home.mlflow_port)]) == 0
    out = capsys.readouterr().out
    assert "already running" in out and f"Prefect UI   {cli_home.urls['prefect_ui']}" in out


@pytest.mark.slow
def test_mlflow_run_lands_in_the_services_home(svc):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=svc.urls["mlflow"])
    run = client.create_run(client.create_experiment("services-test"))
    client.log_metric(run.info.run_id, "loss", 1.5)
    client.log_text(run.info.run_id, "hello", "note.txt")
    client.set_terminated(run.info.run_id)
    mlflow_dir = svc.home / "services" / "mlflow"
    with sqlite3.connect(mlflow_dir / "mlflow.db") as db:
        assert db.execute("SELECT status FROM runs WHERE run_uuid = ?", (run.info.run_id,)).fetchone() == ("FINISHED",)
    (note,) = (mlflow_dir / "artifacts").rglob("note.txt")
    assert run.info.run_id in note.parts and note.read_text() == "hello"


def _env_seen_by_a_new_process(home: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    code = (
        "from tokenmill.core.env import prepare_environment; prepare_environment(); import os; "
        "print(os.environ.get('MLFLOW_TRACKING_URI')); print(os.environ.get('PREFECT_API_URL'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "TOKENMILL_HOME": str(home)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.split()


@pytest.mark.slow
def test_prepare_environment_uses_running_services_else_embedded(svc, tmp_path):
    assert _env_seen_by_a_new_process(svc.home) == [svc.urls["mlflow"], svc.urls["prefect_api"]]
    assert _env_seen_by_a_new_process(tmp_path) == ["None", "None"]


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    from tokenmill.core.config import Config, RunConfig, TrackingConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = Config(run=RunConfig(output_dir=str(tmp_path)))
    assert cfg.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert cfg.tracking_uri == "http://127.0.0.1:5999"
    cfg.tracking = TrackingConfig(uri="sqlite:////elsewhere/mlflow.db")
    assert cfg.tracking_uri == "sqlite:////elsewhere/mlflow.db"


@pytest.mark.slow
def test_taken_port_is_a_clear_error_and_starts_nothing(svc, tmp_path, capsys):
    other = tmp_path / "other"
    (free,) = _free_ports(1)
    with pytest.raises(services.ServiceError, match=f"port {svc.prefect_port} .*--prefect-port"):
        services.up(other, prefect_port=svc.prefect_port, mlflow_port=free)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(services.ServiceError, match=f"port {taken} .*--mlflow-port"):
            services.up(other, prefect_port=free, mlflow_port=taken)
    assert not (other / "services" / "services.json").exists()
    assert {s["state"] for s in services.status(other).values()} == {"stopped"}


def test_up_that_times_out_stops_what_it_started(tmp_path):
    prefect_port, mlflow_port = _free_ports(2)
    with pytest.raises(services.ServiceError, match=r"not healthy .*after 0 s[\s\S]*=== tokenmill up"):
        services.up(tmp_path, prefect_port=prefect_port, mlflow_port=mlflow_port, timeout=0.01)
    assert not (tmp_path / "services" / "services.json").exists()
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or []) or str(prefect_port) in (p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_cli_up_reports_a_taken_port(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOKENMILL_HOME", str(tmp_path))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        assert main(["up", "--prefect-port", str(taken), "--mlflow-port", str(_free_ports(1)[0])]) == 1
    err = capsys.readouterr().err
    assert f"port {taken}" in err and "--prefect-port" in err


def test_down_and_status_with_a_stale_state_file(tmp_path, monkeypatch, capsys):
    _write_stale_state(tmp_path)
    monkeypatch.setenv("TOKENMILL_HOME", str(tmp_path))
    assert main(["status"]) == 3
    assert "prefect  stopped" in capsys.readouterr().out
    assert services.discover(tmp_path) is None
    assert main(["down"]) == 0
    assert "no services were running" in capsys.readouterr().out
    assert not (tmp_path / "services" / "services.json").exists()
    assert services.down(tmp_path) == []


def test_help_texts_describe_the_service_commands(capsys):
    for command in ("up", "down", "status"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "TOKENMILL_HOME" in capsys.readouterr().out


# Last: it stops the module's servers.
@pytest.mark.slow
def test_down_stops_exactly_the_recorded_processes(cli_home, capsys):
    home = cli_home.home
    trees = {name: _tree(rec["pid"]) for name, rec in _recorded(home).items()}
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        assert services.down(home) == ["prefect", "mlflow"]
        assert all(_gone(p) for tree in trees.values() for p in tree)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert not (home / "services" / "services.json").exists()
    assert {s["state"] for s in services.status(home).values()} == {"stopped"}
    assert services.discover(home) is None
    capsys.readouterr()
    assert main(["status"]) == 3
    assert "mlflow   stopped" in capsys.readouterr().out
