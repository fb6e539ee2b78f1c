"""Inputs on object storage: ``s3://`` URIs listed and read through ``pyarrow.fs``, against a local S3 server.

The server is moto's (``ThreadedMotoServer``, in this process, on 127.0.0.1 and a free port); credentials and
endpoint reach tokenmill the way a user gives them, through the environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``...). Every test compares with the same files read from local disk.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import build_hostile_corpus
from moto.server import ThreadedMotoServer

from tokenmill.core.config import load_config
from tokenmill.spark_jobs import readers
from tokenmill.spark_jobs.readers import (
    RAW_SCHEMA,
    AnyReader,
    InputFile,
    TextReader,
    expand_inputs,
    input_identity,
    read_any,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "tokenmill-test", "AWS_SECRET_ACCESS_KEY": "tokenmill-test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """A fresh bucket; endpoint, region and credentials in the environment, as a user would export them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_REGION": "us-east-1", **CREDENTIALS}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"crawl-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)

    def upload(folder: Path, prefix: str) -> str:
        """Every file under ``folder`` (hidden ones too) to ``s3://bucket/prefix/...``; returns that URI."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return f"s3://{bucket}/{prefix}"

    return SimpleNamespace(client=client, bucket=bucket, env=env, upload=upload)


def make_files(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (10 + i))
    return folder


# --- listing ------------------------------------------------------------------------------------


def test_a_prefix_is_listed_recursively_with_sizes_and_mtimes(s3, tmp_path):
    names = ["b.warc.gz", "a.warc.gz", "notes.txt", "README.md", "sub/c.jsonl.zst", "sub/deeper/d.parquet"]
    hidden = ["_SUCCESS", ".a.warc.gz.crc", ".cache/x.jsonl", "_tmp/y.warc.gz", "sub/_SUCCESS"]
    local = make_files(tmp_path / "corpus", names + hidden)
    uri = s3.upload(local, "crawl/2026")

    found = expand_inputs(uri + "/")
    assert found == [
        (f"{uri}/README.md", "unknown"),  # not skipped: the job quarantines it with a reason
        (f"{uri}/a.warc.gz", "warc"),
        (f"{uri}/b.warc.gz", "warc"),
        (f"{uri}/notes.txt", "text"),
        (f"{uri}/sub/c.jsonl.zst", "jsonl"),
        (f"{uri}/sub/deeper/d.parquet", "parquet"),
    ]
    assert expand_inputs(uri) == found  # no trailing slash: the same prefix
    assert all(isinstance(item, InputFile) and item.mtime_ns for item in found)
    assert [item.size for item in found] == [(local / u[len(uri) + 1 :]).stat().st_size for u, _ in found]
    assert {fmt for _, fmt in expand_inputs(uri, fmt="jsonl")} == {"jsonl"}
    # The same listing as the same folder on local disk, path for path.
    on_disk = expand_inputs(str(local))
    assert [(p[len(str(local)) :], f) for p, f in on_disk] == [(u[len(uri) :], f) for u, f in found]


def test_a_single_object_and_globs(s3, tmp_path):
    names = ["a.warc.gz", "b.warc.gz", "c.jsonl", "sub/d.warc.gz", "sub/deep/e.warc.gz", "_tmp/f.warc.gz"]
    names += ["_g.warc.gz", ".h.warc.gz", ".dot/i.warc.gz", "sub/_SUCCESS"]
    uri = s3.upload(make_files(tmp_path / "corpus", names), "in")

    (single,) = expand_inputs(f"{uri}/sub/d.warc.gz")
    assert single == (f"{uri}/sub/d.warc.gz", "warc") and single.size == 13
    assert expand_inputs(f"{uri}/*.warc.gz") == [(f"{uri}/a.warc.gz", "warc"), (f"{uri}/b.warc.gz", "warc")]
    assert expand_inputs(f"{uri}/[b-c]*") == [(f"{uri}/b.warc.gz", "warc"), (f"{uri}/c.jsonl", "jsonl")]
    assert expand_inputs(f"{uri}/?.jsonl") == [(f"{uri}/c.jsonl", "jsonl")]
    # ``**`` spans folders, as a local glob does (dot-folders only are skipped); a matched folder is taken whole.
    assert [p for p, _ in expand_inputs(f"{uri}/**/*.warc.gz")] == [
        f"{uri}/_tmp/f.warc.gz",
        f"{uri}/a.warc.gz",
        f"{uri}/b.warc.gz",
        f"{uri}/sub/d.warc.gz",
        f"{uri}/sub/deep/e.warc.gz",
    ]
    assert [p for p, _ in expand_inputs(f"s3://{s3.bucket}/i*/s?b")] == [
        f"{uri}/sub/d.warc.gz",
        f"{uri}/sub/deep/e.warc.gz",
    ]
    # The same globs on local disk find the same files.
    local = str(tmp_path / "corpus")
    for pattern in ("*.warc.gz", "[b-c]*", "?.jsonl", "**/*.warc.gz", "s?b", "*", "**", "sub/*"):
        on_disk = [p[len(local) :] for p, _ in expand_inputs(f"{local}/{pattern}")]
        assert on_disk == [p[len(uri) :] for p, _ in expand_inputs(f"{uri}/{pattern}")], pattern


def test_missing_and_unmatched_uris_are_helpful_errors(s3, tmp_path):
    uri = s3.upload(make_files(tmp_path / "corpus", ["a.warc.gz", "_SUCCESS"]), "in")
    with pytest.raises(FileNotFoundError) as e:
        expand_inputs(f"{uri}/nope/")
    assert f"{uri}/nope/" in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(FileNotFoundError, match="matches no input files"):
        expand_inputs(f"{uri}/*.parquet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_inputs(f"s3://{s3.bucket}-missing/x/")
    with pytest.raises(ValueError, match="bucket or host names"):
        expand_inputs("s3://crawl-*/x.warc.gz")


def test_a_store_that_cannot_be_listed_stops_the_command_with_the_reason(s3, monkeypatch, capsys):
    from tokenmill.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(OSError, match="cannot list it"):
        expand_inputs(f"s3://{s3.bucket}/in/")
    assert main(["data", "--set", f"data.input=s3://{s3.bucket}/in/"]) == 2
    err = capsys.readouterr().err
    assert f"s3://{s3.bucket}/in/" in err and "cannot list it" in err


def test_the_manifest_identity_comes_from_the_listing(s3, tmp_path, monkeypatch):
    uri = s3.upload(make_files(tmp_path / "corpus", ["a.warc.gz"]), "in")
    (item,) = expand_inputs(uri)

    def no_reads(*args, **kwargs):
        raise AssertionError("an input was opened to describe it")

    monkeypatch.setattr(readers, "open_input", no_reads)
    entry = input_identity(item)
    assert entry["path"] == f"{uri}/a.warc.gz" and entry["format"] == "warc" and entry["bytes"] == 10
    assert entry["mtime"].endswith("+00:00") and set(entry) == {"path", "format", "bytes", "mtime"}
    assert input_identity((item.path, item.format)) == entry  # a bare pair is looked up (metadata only)
    assert item.fingerprint() == f"{uri}/a.warc.gz:10:{item.mtime_ns}"


# --- reading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_local(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    build_hostile_corpus(folder)
    return folder


def test_the_hostile_corpus_reads_the_same_from_s3_as_from_disk(s3, hostile_local):
    """Every reader through the URI path (WARC damage recovery included): the rows equal the local ones."""
    uri = s3.upload(hostile_local, "hostile")
    local_items = expand_inputs(str(hostile_local))
    remote_items = expand_inputs(uri)
    assert [p[len(str(hostile_local)) :] for p, _ in local_items] == [p[len(uri) :] for p, _ in remote_items]
    assert [i.size for i in local_items] == [i.size for i in remote_items]
    for (path, fmt), (remote, remote_fmt) in zip(local_items, remote_items):
        assert remote_fmt == fmt
        assert list(read_any(remote, fmt)) == list(read_any(path, fmt)), remote
    # A folder read by the text reader, and sources relative to a root URI.
    assert list(TextReader(uri).read_file(f"{uri}/texts")) == list(
        TextReader(str(hostile_local)).read_file(str(hostile_local / "texts"))
    )


def test_an_unreachable_object_is_a_quarantine_row_naming_it(s3, tmp_path):
    uri = s3.upload(make_files(tmp_path / "corpus", ["a.jsonl"]), "in")
    s3.client.delete_object(Bucket=s3.bucket, Key="in/a.jsonl")
    (row,) = read_any(f"{uri}/a.jsonl")
    assert row["error"].startswith("a.jsonl: cannot read jsonl file at the start")


# --- the data job on Spark ----------------------------------------------------------------------


def _sample_inputs(folder: Path) -> Path:
    """A WARC of the sample corpus, a gzipped JSONL and a Parquet file: three readers, two compressions."""
    folder.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "data" / "sample" / "crawl-00000.warc.gz", folder / "crawl-00000.warc.gz")
    docs = [{"id": f"j{i}", "text": f"JSON lines document number {i}.", "url": f"http://j/{i}"} for i in range(5)]
    (folder / "more").mkdir()
    (folder / "more" / "docs.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(d) + "\n" for d in docs).encode()))
    table = pa.table({"text": [f"Parquet row {i}." for i in range(4)], "lang_hint": ["en"] * 4})
    pq.write_table(table, folder / "more" / "rows.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def _rows(shards: list[dict]) -> list[dict]:
    return sorted((r for s in shards for r in pq.read_table(s["path"]).to_pylist()), key=lambda r: r["id"])


def test_the_spark_reading_stage_over_s3_gives_the_local_rows(spark, s3, tmp_path, monkeypatch):
    """The readers run in Spark's Python workers: they build the S3 filesystem there from the URI and their own
    environment. Local mode starts its Python workers from the JVM's environment, fixed when the JVM started
    (possibly before this test set AWS_*), plus ``spark.executorEnv.*`` (``SparkContext.environment``): the
    test gives the workers the variables that way, as a cluster would."""
    for name, value in s3.env.items():
        monkeypatch.setitem(spark.sparkContext.environment, name, value)
    local = _sample_inputs(tmp_path / "in")
    uri = s3.upload(local, "in")

    def read(spec: str) -> list[dict]:
        files = spark.createDataFrame(expand_inputs(spec), "path string, format string").repartition(3)
        rows = files.mapInPandas(AnyReader(), RAW_SCHEMA).collect()
        return sorted((r.asDict() for r in rows), key=lambda r: r["id"])

    remote, on_disk = read(uri), read(str(local))
    assert len(on_disk) > 100 and all(r["error"] is None for r in on_disk)
    assert remote == on_disk


@pytest.mark.slow  # the data job twice (local disk, then S3) on a small corpus
def test_the_data_job_over_s3_writes_the_local_outputs(spark, s3, tmp_path, monkeypatch):
    from tokenmill.spark_jobs.clean import run_clean_job

    for name, value in s3.env.items():
        monkeypatch.setitem(spark.sparkContext.environment, name, value)
    local = _sample_inputs(tmp_path / "in")
    uri = s3.upload(local, "in")

    def run(spec: str, out: str) -> dict:
        cfg = load_config(overrides=[f"data.input={spec}", "data.steps=[extract]", "data.spark_master=local[2]"])
        return run_clean_job(cfg.data, tmp_path / out)

    on_disk, remote = run(str(local), "out-local"), run(uri + "/", "out-s3")
    assert remote["counts"] == on_disk["counts"] and remote["counts"]["read"] > 100
    for kind in ("kept", "rejected", "quarantine"):
        assert _rows(remote["outputs"][kind]) == _rows(on_disk["outputs"][kind]), kind
    assert [i["path"] for i in remote["inputs"]] == [
        f"{uri}/crawl-00000.warc.gz",
        f"{uri}/more/docs.jsonl.gz",
        f"{uri}/more/rows.parquet",
    ]
    for mine, theirs in zip(remote["inputs"], on_disk["inputs"]):
        assert mine["bytes"] == theirs["bytes"] and mine["format"] == theirs["format"] and mine["mtime"]
        assert "sha256" not in mine
