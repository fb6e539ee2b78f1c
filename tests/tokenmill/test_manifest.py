"""tokenmill.core.manifest: atomic JSON hand-off between stages."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest


def test_write_then_read_round_trips_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "deep" / "er" / "manifest.json"
    manifest = {"stage": "data", "counts": {"read": 3}, "outputs": {"kept": [{"path": "a"}]}}
    assert write_manifest(path, manifest) == path
    assert read_manifest(path, "data") == manifest
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


def test_rewrite_replaces_content(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, {"stage": "data", "n": 1})
    write_manifest(path, {"stage": "data", "n": 2})
    assert read_manifest(path, "data")["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_non_json_values_are_stringified(tmp_path):
    elsewhere = tmp_path / "corpus"  # outside the run folder (tmp_path/run): kept as written
    path = write_manifest(tmp_path / "run" / "x" / "m.json", {"stage": "x", "where": elsewhere, "n": (1, 2)})
    assert json.loads(path.read_text()) == {"stage": "x", "where": str(elsewhere), "n": [1, 2]}


def test_read_checks_stage(tmp_path):
    path = write_manifest(tmp_path / "m.json", {"stage": "tokenize"})
    with pytest.raises(ValueError, match="'tokenize'.*expected 'data'"):
        read_manifest(path, "data")


def test_read_missing_file_names_stage_and_path(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(FileNotFoundError) as e:
        read_manifest(missing, "train")
    assert "train manifest not found" in str(e.value)
    assert str(missing) in str(e.value)


@pytest.mark.parametrize("size", [0, 1, 5000])
def test_sha256_file_matches_hashlib(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=7) == expected  # chunking does not change the digest


def _run_folder(root):
    """A run folder with data/ and tokens/ stages, files in each, and a corpus outside it."""
    for rel in ("data/kept/part-0.parquet", "tokens/train.parquet", "tokens/tokenizer.json", "corpus/a.warc.gz"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    run = root / "runs" / "demo"
    shutil.move(root / "data", run / "data")
    shutil.move(root / "tokens", run / "tokens")
    return run


def test_paths_inside_the_run_folder_are_stored_relative_to_the_manifest(tmp_path):
    run = _run_folder(tmp_path)
    corpus = tmp_path / "corpus" / "a.warc.gz"
    manifest = {
        "stage": "tokenize",
        "data_manifest": {"path": str(run / "data" / "manifest.json"), "sha256": "ab"},
        "splits": {"train": {"path": run / "tokens" / "train.parquet", "tokens": 3}},
        "tokenizer": {"path": str(run / "tokens" / "tokenizer.json")},
        "shards": [[str(run / "data" / "kept" / "part-0.parquet")], str(run / "tokens")],
        "inputs": [{"path": str(corpus)}, {"path": "s3://bucket/runs/demo/tokens/x"}, {"uri": "file:///x/y"}],
        "config": {"input": str(run / "data"), "prompt": "./not a path"},  # verbatim: the user's config
        "sample": "../text",  # verbatim: free text
        "name": "/ is not special outside a path",
    }
    path = write_manifest(run / "tokens" / "manifest.json", manifest)
    on_disk = json.loads(path.read_text())
    assert on_disk["data_manifest"]["path"] == "../data/manifest.json"
    assert on_disk["splits"]["train"]["path"] == "./train.parquet"
    assert on_disk["tokenizer"]["path"] == "./tokenizer.json"
    assert on_disk["shards"] == [["../data/kept/part-0.parquet"], "./"]
    assert on_disk["inputs"] == [
        {"path": str(corpus)},
        {"path": "s3://bucket/runs/demo/tokens/x"},
        {"uri": "file:///x/y"},
    ]
    assert on_disk["config"] == {"input": str(run / "data"), "prompt": "./not a path"}
    assert (on_disk["sample"], on_disk["name"]) == ("../text", "/ is not special outside a path")
    assert read_manifest(path, "tokenize") == json.loads(json.dumps(manifest, default=str))


def test_a_moved_run_folder_resolves_to_its_new_place(tmp_path):
    run = _run_folder(tmp_path)
    corpus = str(tmp_path / "corpus" / "a.warc.gz")
    write_manifest(
        run / "data" / "manifest.json",
        {
            "stage": "data",
            "inputs": [{"path": corpus}],
            "outputs": {"kept": [{"path": str(run / "data/kept/part-0.parquet")}]},
        },
    )
    write_manifest(
        run / "tokens" / "manifest.json",
        {
            "stage": "tokenize",
            "data_manifest": {"path": str(run / "data" / "manifest.json")},
            "splits": {"train": {"path": str(run / "tokens" / "train.parquet")}},
            "uri": "s3://bucket/x",
        },
    )
    moved = tmp_path / "elsewhere" / "copy-of-demo"
    shutil.copytree(run, moved)
    shutil.rmtree(run)

    tokens = read_manifest(moved / "tokens" / "manifest.json", "tokenize")
    assert tokens["splits"]["train"]["path"] == str(moved / "tokens" / "train.parquet")
    assert tokens["uri"] == "s3://bucket/x"
    data = read_manifest(tokens["data_manifest"]["path"], "data")
    kept = data["outputs"]["kept"][0]["path"]
    assert kept == str(moved / "data" / "kept" / "part-0.parquet")
    assert open(kept).read() == "data/kept/part-0.parquet"
    assert data["inputs"][0]["path"] == corpus  # outside the run folder: still the absolute path


def test_root_names_a_run_folder_above_the_stage(tmp_path):
    """The evaluate manifest sits at <run>/train/evaluate/: with root=<run>, <run>/tokens is relative too."""
    run = _run_folder(tmp_path)
    m = {"stage": "evaluate", "tokens_manifest": str(run / "tokens" / "manifest.json"), "model": str(run / "train")}
    path = write_manifest(run / "train" / "evaluate" / "manifest.json", m, root=run)
    assert json.loads(path.read_text())["tokens_manifest"] == "../../tokens/manifest.json"
    assert json.loads(path.read_text())["model"] == "../"
    assert read_manifest(path, "evaluate") == m
    # a root that does not hold the manifest falls back to the default: tokens/ is outside <run>/train
    other = write_manifest(run / "train" / "evaluate" / "m2.json", m, root=tmp_path / "corpus")
    assert json.loads(other.read_text())["tokens_manifest"] == str(run / "tokens" / "manifest.json")
