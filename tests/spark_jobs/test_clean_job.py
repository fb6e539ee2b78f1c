"""The whole data job on Spark: hostile input runs to completion and every record is accounted for."""

import pyarrow.parquet as pq
import pytest
from hostile import BIG, build_hostile_corpus

from tokenmill.cli import main
from tokenmill.core.config import load_config
from tokenmill.spark_jobs.clean import run_clean_job


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
