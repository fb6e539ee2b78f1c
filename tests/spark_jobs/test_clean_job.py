"""The whole data job on Spark: hostile input runs to completion and every record is accounted for."""

import json

import pyarrow.parquet as pq
import pytest
from hostile import BIG, build_hostile_corpus, html, warc_member

from tokenmill.cli import main
from tokenmill.core.config import ConfigError, load_config
from tokenmill.spark_jobs.clean import check_extract_for_html, run_clean_job
from tokenmill.spark_jobs.readers import expand_inputs


def rows(shards):
    return [r for s in shards for r in pq.read_table(s["path"]).to_pylist()]


@pytest.mark.slow  # the whole data job over a corpus with a 10 MB document
def test_hostile_corpus_is_kept_dropped_or_quarantined_never_lost(spark, tmp_path):
    expected = build_hostile_corpus(tmp_path / "in")
    cfg = load_config(
        overrides=[f"data.input={tmp_path / 'in'}", "data.steps=[extract, exact_dedup]", "data.spark_master=local[2]"]
    )
    m = run_clean_job(cfg.data, tmp_path / "out")
    counts = m["counts"]
    dropped, quarantined = sum(counts["dropped"].values()), sum(counts["quarantined"].values())
    assert counts["read"] == expected["good"] + expected["quarantined"]
    assert quarantined == expected["quarantined"]
    assert counts["kept"] + dropped == expected["good"]

    bad = rows(m["outputs"]["quarantine"])
    assert len(bad) == quarantined
    assert all(r["error"] and r["stage"] == "read" and r["source"] for r in bad)
    kept = rows(m["outputs"]["kept"])
    assert max(len(r["text"]) for r in kept) >= BIG  # the 10 MB document went through whole
    assert len({r["id"] for r in kept + rows(m["outputs"]["rejected"]) + bad}) == counts["read"]  # ids unique

    funnel = {r["stage"]: r for r in m["funnel"]}
    assert funnel["read"]["quarantined"] == quarantined
    assert funnel["exact_dedup"]["out"] == counts["kept"]


def test_missing_input_fails_fast_with_what_to_fix(tmp_path, capsys):
    assert main(["data", "--set", f"data.input={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err


def test_unknown_step_option_fails_fast(capsys):
    assert main(["data", "--set", "data.langid.treshold=0.5"]) == 2
    assert "threshold" in capsys.readouterr().err


def without_extract_corpus(folder):
    """A WET file (text), a WARC file (HTML pages) and a JSONL file with one text and one empty one.
    The WET file sorts first, so the up-front check reads it and lets the job run."""
    folder.mkdir()
    wet = "A plain text document from a WET file, with words enough to be kept by anything."
    (folder / "a.warc.wet.gz").write_bytes(warc_member("http://wet/0", wet.encode(), "conversion"))
    (folder / "b.warc.gz").write_bytes(warc_member("http://warc/0", html(0)) + warc_member("http://warc/1", html(1)))
    lines = [{"id": "j0", "text": "A JSONL document that has text."}, {"id": "j1", "text": ""}]
    (folder / "c.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_without_extract_pages_are_dropped_as_no_text_never_kept_without_text(spark, tmp_path):
    folder = without_extract_corpus(tmp_path / "in")
    cfg = load_config(overrides=[f"data.input={folder}", "data.steps=[url_dedup, pii]", "data.spark_master=local[2]"])
    m = run_clean_job(cfg.data, tmp_path / "out")
    assert m["counts"] == {"read": 5, "kept": 2, "dropped": {"no_text": 3}, "quarantined": {}}
    kept = rows(m["outputs"]["kept"])
    assert sorted(r["text"][:6] for r in kept) == ["A JSON", "A plai"]
    rejected = rows(m["outputs"]["rejected"])
    assert sorted(r["url"] for r in rejected) == ["", "http://warc/0", "http://warc/1"]
    assert {(r["stage"], r["reason"]) for r in rejected} == {("pii", "no_text")}  # after the last document step
    assert [(r["stage"], r["out"]) for r in m["funnel"]] == [("read", 5), ("url_dedup", 5), ("pii", 2)]


def test_html_input_without_extract_is_a_config_error_up_front(tmp_path, capsys):
    folder = without_extract_corpus(tmp_path / "in")
    inputs = expand_inputs(str(folder))
    check_extract_for_html(inputs, ["pii"])  # the first WARC input is WET: its records are text
    check_extract_for_html(inputs, ["extract", "pii"])
    warc = expand_inputs(str(folder / "b.warc.gz"))
    check_extract_for_html(warc, ["extract", "pii"])
    with pytest.raises(ConfigError, match="extract"):
        check_extract_for_html(warc, ["pii", "minhash"])

    assert main(["data", "--set", f"data.input={folder / 'b.warc.gz'}", "--set", "data.steps=[pii]"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "no 'extract'" in err and "b.warc.gz" in err
