"""``train.launcher: slurm`` through a real one-node Slurm (``infra/slurm/local-cluster.sh``, brought up here; as
root it installs slurm-wlm and munge with apt-get when they are missing).

A tiny training submitted by ``train_stage`` runs as a Slurm job and logs into the MLflow run the stage
opened, which ends FINISHED with its lineage. Cancelling a flow run served by a Prefect runner (which
SIGTERMs the flow run's process) stops the job: its ranks checkpoint and it leaves the queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER = REPO_ROOT / "infra" / "slurm" / "local-cluster.sh"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # Slurm daemons and training processes


def _cluster(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), action], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node Slurm, up for the session; taken down again unless it was already up."""
    was_up = _cluster("status").returncode == 0
    up = _cluster("up")
    assert up.returncode == 0, up.stdout + up.stderr
    conf = _cluster("env").stdout.strip().removeprefix("export SLURM_CONF=")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if not was_up:
        _cluster("down")


# CPU-only node: no GPUs to ask for, and as many CPUs as the ranks use (the template asks for 64).
SLURM_ARGS = '["--gpus-per-node=0", "--cpus-per-task=1", "--time=00:30:00"]'


def overrides(out: Path, run_name: str, steps: int) -> list[str]:
    return [
        f"run.output_dir={out}",
        f"run.name={run_name}",
        "train.launcher=slurm",
        f"train.slurm_args={SLURM_ARGS}",
        "train.poll_seconds=1",
        "train.nproc=1",
        f"train.max_steps={steps}",
        "train.warmup_steps=1",
        "train.log_every=1",
        "tracking.register_model=false",
        "tracking.system_metrics=false",
    ]


def job_state(job_id: str) -> str:
    from tokenmill.training import slurm

    return slurm.state(job_id)[0]


def test_a_training_submitted_to_slurm_logs_into_the_stage_run(slurm_cluster, pipeline_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from tokenmill.core import tracking
    from tokenmill.resolve import resolve_config
    from tokenmill.training.stage import train_stage

    tokens = pipeline_run["tokens_manifest"]
    cfg = resolve_config(REPO_ROOT / "conf" / "tiny.yaml", overrides(tmp_path, "slurm-tiny", steps=4))
    lines: list[str] = []
    result = train_stage(cfg, tokens, tmp_path / "train", echo=lines.append)

    run = MlflowClient(cfg.tracking_uri).get_run(result["mlflow_run_id"])
    job_id = run.data.tags["tokenmill.slurm_job_id"]
    assert job_state(job_id) == "COMPLETED"
    output = (tmp_path / "train" / f"slurm-{job_id}.out").read_text()
    assert f"train.sbatch: job {job_id}, 1 node(s) x 1 rank(s)" in output
    assert "[rank 0] step 4/4" in output
    assert any("[rank 0] step 4/4" in line for line in lines), lines[-20:]  # followed while it ran

    assert run.info.status == "FINISHED"
    for key, value in tracking.lineage_tags(Path(tokens)).items():
        assert run.data.tags[key] == value, key
    assert run.data.tags["tokenmill.stage"] == "train"
    assert run.data.metrics, "the job logged no metrics into the stage's run"
    manifest = read_manifest(result["train_manifest"], stage="train")
    assert manifest["mlflow_run_id"] == result["mlflow_run_id"]


def _wait_for(what: str, check, timeout: float, diagnostics=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}\n{diagnostics()}")


def test_cancelling_the_flow_run_cancels_the_slurm_job(slurm_cluster, pipeline_run, prefect_harness, tmp_path):
    """The train flow, served by a Prefect runner in its own process; the flow run is cancelled through the API,
    as the UI or ``prefect flow-run cancel`` does. The runner SIGTERMs the process running the flow, whose
    train task then stops the Slurm job (its own children die with it, the job would not)."""
    from mlflow.tracking import MlflowClient
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Cancelling

    from tokenmill.resolve import resolve_config

    run_name = f"slurm-cancel-{os.getpid()}"
    sets = overrides(tmp_path, run_name, steps=100000)
    out = tmp_path / "train"
    log_file = tmp_path / "serve.log"
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, "-c", "from tokenmill.flows.train import train_flow; train_flow.serve(name='slurm-cancel')"],
        cwd=REPO_ROOT,
        env=env,
        stdout=open(log_file, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def said() -> str:
        return log_file.read_text()[-4000:]

    try:
        flow_run = None
        deadline = time.monotonic() + 180
        while flow_run is None:
            try:
                flow_run = run_deployment(
                    "train/slurm-cancel",
                    parameters={
                        "tokens_manifest": pipeline_run["tokens_manifest"],
                        "config_path": str(REPO_ROOT / "conf" / "tiny.yaml"),
                        "overrides": sets,
                        "out_dir": str(out),
                    },
                    timeout=0,
                )
            except Exception:  # the deployment is not registered yet
                assert serve.poll() is None and time.monotonic() < deadline, said()
                time.sleep(2)

        def running_job() -> str | None:
            listed = subprocess.run(
                ["squeue", "--noheader", f"--name=tokenmill-{run_name}", "--format=%i %T"],
                capture_output=True,
                text=True,
            ).stdout.split()
            return listed[0] if listed[1:2] == ["RUNNING"] else None

        job_id = _wait_for("the Slurm job to run", running_job, 300, said)
        slurm_out = out / f"slurm-{job_id}.out"
        _wait_for(
            "the first steps",
            lambda: slurm_out.exists() and "[rank 0] step 3/" in slurm_out.read_text(),
            300,
            lambda: slurm_out.exists() and slurm_out.read_text()[-3000:] or said(),
        )

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

            def final_state():
                state = client.read_flow_run(flow_run.id).state
                return state if state.is_final() else None

            state = _wait_for("the flow run to end", final_state, 240, said)
        assert state.is_cancelled(), f"{state.type}: {state.message}\n{said()}"
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)

    # The job left the queue after its ranks wrote a checkpoint on SIGTERM (they exit 143: the job ends FAILED).
    assert subprocess.run(["squeue", "--noheader", "--jobs", job_id], capture_output=True, text=True).stdout == ""
    assert job_state(job_id) in ("FAILED", "CANCELLED")
    text = slurm_out.read_text()
    assert "train: stopped by SIGTERM after step" in text, text[-3000:]
    assert (out / "checkpoints" / "latest").exists()

    cfg = resolve_config(REPO_ROOT / "conf" / "tiny.yaml", sets)
    client = MlflowClient(cfg.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        f"tags.`tokenmill.slurm_job_id` = '{job_id}'",
    )
    assert run.info.status == "KILLED"  # resumable, not failed
    assert run.data.tags.get("tokenmill.stopped") == "stopped by SIGTERM", run.data.tags
