"""tokenmill.core.manifest: atomic JSON hand-off between stages."""

from __future__ import annotations

import hashlib
import json

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
    path = write_manifest(tmp_path / "m.json", {"stage": "x", "where": tmp_path})
    assert json.loads(path.read_text())["where"] == str(tmp_path)


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
