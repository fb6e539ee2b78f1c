"""The data job runs unchanged on a real Spark standalone cluster (master + worker on 127.0.0.1)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tokenmill.core.manifest import read_manifest
from tokenmill.spark_jobs.cluster import StandaloneCluster

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # a Spark master and worker, and the data job run twice


def test_data_job_on_a_standalone_cluster_matches_local_mode(tmp_path):
    sample = REPO_ROOT / "data" / "sample" / "crawl-00002.warc.gz"
    common = [
        sys.executable,
        "-m",
        "tokenmill.cli",
        "data",
        "--config",
        str(REPO_ROOT / "conf" / "tiny.yaml"),
        "--set",
        f"data.input={sample}",
        "--set",
        "data.spark_driver_memory=1g",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with StandaloneCluster(workers=1, cores_per_worker=2, memory_per_worker="1g", log_dir=tmp_path / "logs") as c:
        cluster_run = subprocess.run(
            common
            + ["--set", f"data.spark_master={c.url}", "--set", f"data.checkpoint_dir={tmp_path / 'checkpoints'}"]
            + ["--out", str(tmp_path / "c")],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    assert cluster_run.returncode == 0, cluster_run.stderr[-3000:]
    local_run = subprocess.run(
        common + ["--set", "data.spark_master=local[2]", "--out", str(tmp_path / "l")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert local_run.returncode == 0, local_run.stderr[-3000:]

    on_cluster = read_manifest(tmp_path / "c" / "manifest.json", "data")
    local = read_manifest(tmp_path / "l" / "manifest.json", "data")
    assert on_cluster["spark"]["master"] == c.url
    assert on_cluster["counts"] == local["counts"]
    assert on_cluster["funnel"] == local["funnel"]
    # Same documents, same order, same values (the files' bytes differ: Parquet records the writer's settings)
    table = lambda m: pq.read_table([s["path"] for s in m["outputs"]["kept"]]).to_pylist()  # noqa: E731
    assert table(on_cluster) == table(local)
    assert "stage" in cluster_run.stdout and "minhash" in cluster_run.stdout  # the funnel table was printed


def test_the_data_job_finishes_the_same_when_an_executor_dies_during_minhash(tmp_path):
    sample = REPO_ROOT / "data" / "sample" / "crawl-00002.warc.gz"
    checkpoints = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with StandaloneCluster(workers=2, cores_per_worker=1, memory_per_worker="1g", log_dir=tmp_path / "logs") as c:
        command = [
            *(sys.executable, "-m", "tokenmill.cli", "data", "--config", str(REPO_ROOT / "conf" / "tiny.yaml")),
            *("--set", f"data.input={sample}", "--set", "data.spark_driver_memory=1g"),
            *("--set", f"data.spark_master={c.url}", "--set", f"data.checkpoint_dir={checkpoints}"),
        ]
        calm = subprocess.run(command + ["--out", str(tmp_path / "calm")], capture_output=True, text=True, env=env)
        assert calm.returncode == 0, calm.stderr[-3000:]

        hit = subprocess.Popen(
            command + ["--out", str(tmp_path / "hit")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.time() + 600
        # MinHash has started once its first reliable checkpoint is on disk (the calm run removed its own)
        while not [p for p in checkpoints.rglob("*") if p.is_file()]:
            assert hit.poll() is None and time.time() < deadline, "the run ended before MinHash checkpointed"
            time.sleep(0.05)
        victims = c.executor_pids(0)
        assert victims, "worker 0 runs no executor"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        output = hit.communicate(timeout=900)[0].decode(errors="replace")
        assert hit.returncode == 0, output[-3000:]

    calm_m = read_manifest(tmp_path / "calm" / "manifest.json", "data")
    hit_m = read_manifest(tmp_path / "hit" / "manifest.json", "data")
    assert hit_m["counts"] == calm_m["counts"] and hit_m["funnel"] == calm_m["funnel"]
    table = lambda m: pq.read_table([s["path"] for s in m["outputs"]["kept"]]).to_pylist()  # noqa: E731
    assert table(hit_m) == table(calm_m)  # the same kept ids and shard contents
