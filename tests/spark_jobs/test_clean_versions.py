"""The data job's outputs: a new version folder per run behind a manifest that flips last, shards written and hashed
by the tasks that hold their rows, and read counts from the reading tasks (spark_jobs/clean.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tokenmill.spark_jobs.clean as clean
import tokenmill.spark_jobs.minhash as clean_minhash
from tokenmill.core.config import load_config
from tokenmill.core.manifest import read_manifest, sha256_file
from tokenmill.spark_jobs.clean import ParquetShardWriter, ReadCounter, _read_count, run_clean_job

WORDS = "the quick brown fox jumps over a lazy dog while seven tired bakers sing about warm bread".split()


def corpus(folder: Path, files: int = 3, per_file: int = 40) -> int:
    """JSONL inputs of distinct English-looking documents (some exact duplicates across files); returns the count."""
    folder.mkdir(parents=True)
    n = 0
    for f in range(files):
        with open(folder / f"part-{f}.jsonl", "w") as fh:
            for i in range(per_file):
                k = (f * per_file + i) % 100  # files 0-2 of 40 documents: 20 exact duplicates
                words = [WORDS[(k * 7 + j * 3) % len(WORDS)] for j in range(60)]
                fh.write(json.dumps({"id": f"d{f}-{i}", "text": f"Document {k}. " + " ".join(words) + "."}) + "\n")
                n += 1
    return n


def job(tmp_path: Path, *extra: str):
    cfg = load_config(
        overrides=[
            f"data.input={tmp_path / 'in'}",
            "data.steps=[exact_dedup]",
            "data.spark_master=local[2]",
            *extra,
        ]
    )
    return cfg.data


def versions(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.name.startswith("v-")}


def test_each_run_writes_a_new_version_and_the_manifest_points_at_it(spark, tmp_path):
    n = corpus(tmp_path / "in")
    out = tmp_path / "data"
    first = run_clean_job(job(tmp_path), out)
    assert first["counts"]["read"] == n and first["counts"]["kept"] == 100
    assert versions(out) == {first["version"]}
    for name, shards in first["outputs"].items():
        for shard in shards:  # the tasks' records match the files
            path = Path(shard["path"])
            assert path.parent == out / first["version"] / name
            assert shard["sha256"] == sha256_file(path) and shard["bytes"] == path.stat().st_size
            assert shard["rows"] == pq.ParquetFile(path).metadata.num_rows
    assert not list(out.rglob("_reads")) and not list(out.rglob(".*tmp*"))

    second = run_clean_job(job(tmp_path), out)
    assert second["version"] != first["version"]
    assert read_manifest(out / "manifest.json", "data")["version"] == second["version"]
    assert versions(out) == {first["version"], second["version"]}  # the previous one stays for its readers
    # the same input re-runs to the same shards, byte for byte
    strip = lambda m: [(s["rows"], s["sha256"]) for s in m["outputs"]["kept"]]  # noqa: E731
    assert strip(second) == strip(first)

    third = run_clean_job(job(tmp_path), out)
    assert versions(out) == {second["version"], third["version"]}


def test_a_failed_run_leaves_the_previous_result_whole(spark, tmp_path, monkeypatch):
    corpus(tmp_path / "in")
    out = tmp_path / "data"
    good = run_clean_job(job(tmp_path), out)
    before = (out / "manifest.json").read_bytes()
    real = clean._write_shards

    def dies_after_kept(frame, folder, row_group_bytes):
        real(frame, folder, row_group_bytes)  # the shards are written, the manifest is not
        raise RuntimeError("the driver died while writing")

    monkeypatch.setattr(clean, "_write_shards", dies_after_kept)
    with pytest.raises(RuntimeError, match="died"):
        run_clean_job(job(tmp_path), out)
    assert (out / "manifest.json").read_bytes() == before
    kept = [r for s in good["outputs"]["kept"] for r in pq.read_table(s["path"]).to_pylist()]
    assert len(kept) == good["counts"]["kept"]
    monkeypatch.undo()
    again = run_clean_job(job(tmp_path), out)  # the rerun: the same result, the half-written version removed
    assert [s["sha256"] for s in again["outputs"]["kept"]] == [s["sha256"] for s in good["outputs"]["kept"]]
    assert versions(out) == {good["version"], again["version"]}


def test_read_counts_come_from_every_reading_task(spark, tmp_path):
    folder = tmp_path / "reads"
    folder.mkdir()
    frame = spark.createDataFrame([(i,) for i in range(30)], "x long").repartition(3)
    counted = frame.mapInPandas(ReadCounter(lambda batches: batches, str(folder)), "x long")
    assert counted.count() == 30
    assert _read_count(spark, folder, 3) == 30
    assert len(list(folder.glob("part-*.json"))) == 3
    assert counted.count() == 30 and _read_count(spark, folder, 3) == 30  # a recomputation rewrites, never adds
    next(folder.glob("part-*.json")).unlink()
    with pytest.raises(RuntimeError, match="2 of 3 reading tasks"):
        _read_count(spark, folder, 3)


def test_the_shard_writer_cuts_row_groups_by_size_and_hashes_what_it_wrote(tmp_path):
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("status", pa.string())])
    batches = [
        pa.RecordBatch.from_pylist(
            [{"id": f"{b}-{i}", "text": "x" * 1000, "status": "dropped" if i == 7 else "kept"} for i in range(101)],
            schema=schema,
        )
        for b in range(5)
    ]
    outputs = {
        "kept": ("kept", ["id", "text"]),
        "rejected": ("dropped", ["id", "status"]),
        "quarantine": ("quarantined", ["id"]),
    }
    (row,) = list(ParquetShardWriter(str(tmp_path), outputs, row_group_bytes=200_000)(iter(batches)))
    record, rejected = row.to_pylist()  # no quarantined rows: no quarantine file
    assert rejected["output"] == "rejected" and rejected["rows"] == 5
    assert pq.read_table(tmp_path / "rejected" / rejected["name"]).column_names == ["id", "status"]
    path = tmp_path / "kept" / record["name"]
    assert record == {
        "output": "kept",
        "name": "part-00000.parquet",
        "rows": 500,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 500 and 2 <= meta.num_row_groups <= 3  # ~100 KB per batch, groups of >= 200 KB
    assert pq.read_table(path).column("id").to_pylist()[:2] == ["0-0", "0-1"]
    assert list(ParquetShardWriter(str(tmp_path / "none"), outputs, 1)(iter([]))) == []  # no rows: no file
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == [
        "kept/part-00000.parquet",
        "rejected/part-00000.parquet",
    ]


def test_a_checkpoint_dir_gets_reliable_checkpoints_and_they_are_removed(spark, tmp_path, monkeypatch):
    corpus(tmp_path / "in")
    kinds = []
    real = clean_minhash._materialize

    def spy(df):
        kinds.append(df.sparkSession.conf.get(clean_minhash.CHECKPOINT_CONF, ""))
        return real(df)

    monkeypatch.setattr(clean_minhash, "_materialize", spy)
    folder = tmp_path / "checkpoints"
    reliable = run_clean_job(job(tmp_path, "data.steps=[minhash]", f"data.checkpoint_dir={folder}"), tmp_path / "a")
    assert kinds and set(kinds) == {str(folder)}  # every lineage cut of the run went to the folder
    assert folder.is_dir() and not [p for p in folder.rglob("*") if p.is_file()]  # and the job removed them
    kinds.clear()
    local = run_clean_job(job(tmp_path, "data.steps=[minhash]"), tmp_path / "b")
    assert kinds and set(kinds) == {""}  # the same session, no folder: local checkpoints again
    assert [s["sha256"] for s in reliable["outputs"]["kept"]] == [s["sha256"] for s in local["outputs"]["kept"]]


@pytest.mark.slow  # the data job three times in its own processes
def test_killing_the_driver_while_it_writes_leaves_the_previous_result_and_a_rerun_matches(tmp_path):
    corpus(tmp_path / "in")
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "tokenmill.cli",
        "data",
        *("--set", f"data.input={tmp_path / 'in'}", "--set", "data.steps=[exact_dedup]"),
        *("--set", "data.spark_master=local[2]", "--set", "data.spark_driver_memory=1g", "--out", str(out)),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    assert subprocess.run(command, env=env, capture_output=True, timeout=600).returncode == 0
    before = (out / "manifest.json").read_bytes()
    good = read_manifest(out / "manifest.json", "data")

    run = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while not [p for p in out.glob("v-*/kept") if p.parent.name != good["version"]]:  # the write has begun
        assert run.poll() is None and time.time() < deadline, "the run ended before it wrote"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the driver and its JVM
    run.wait()

    assert (out / "manifest.json").read_bytes() == before
    kept = [r for s in good["outputs"]["kept"] for r in pq.read_table(s["path"]).to_pylist()]
    assert len(kept) == good["counts"]["kept"] == 100
    assert subprocess.run(command, env=env, capture_output=True, timeout=600).returncode == 0
    again = read_manifest(out / "manifest.json", "data")
    assert [s["sha256"] for s in again["outputs"]["kept"]] == [s["sha256"] for s in good["outputs"]["kept"]]
    assert versions(out) == {good["version"], again["version"]}  # the killed run's folder is gone
