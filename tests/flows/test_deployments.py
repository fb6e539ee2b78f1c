"""prefect.yaml and ``tokenmill serve``: every deployment loads, is named <flow>/<variant>, validates its
parameters against its flow, and becomes a runner deployment with its schedule."""

import pytest
import yaml

from tokenmill.cli import main
from tokenmill.core.config import load_config
from tokenmill.flows.bakeoff import bakeoff_sizes
from tokenmill.flows.deployments import (
    PREFECT_FILE,
    deployment_entries,
    runner_deployments,
    select,
)


@pytest.fixture(scope="module")
def entries():
    return deployment_entries()


def test_every_flow_has_a_deployment_named_flow_slash_variant(entries):
    names = [e["full_name"] for e in entries]
    assert len(set(names)) == len(names)
    assert {n.split("/")[0] for n in names} == {
        "data",
        "tokenize",
        "train",
        "evaluate",
        "pipeline",
        "bakeoff",
        "ablation",
    }
    assert {
        "data/nightly",
        "pipeline/demo",
        "pipeline/tiny",
        "train/on-demand",
        "bakeoff/weekly",
        "ablation/monthly",
    } <= set(names)


def test_parameters_validate_against_the_flows(entries):
    for e in entries:
        given = dict(e.get("parameters") or {})
        # an on-demand deployment leaves its input manifest to the person who triggers it
        required = set(e["flow"].parameters.required or []) - set(given)
        assert required <= {"tokens_manifest", "train_manifest", "data_manifest"}, e["full_name"]
        e["flow"].validate_parameters({**given, **dict.fromkeys(required, "manifest.json")})  # raises if wrong
        config = (e.get("parameters") or {}).get("config_path")
        assert config and (PREFECT_FILE.parent / config).is_file(), e["full_name"]
        load_config(PREFECT_FILE.parent / config)


def test_work_pools_and_schedules(entries):
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    pools = {p["name"] for p in spec["definitions"]["work_pools"].values()}
    for e in entries:
        assert e["work_pool"]["name"] in pools
    nightly = next(e for e in entries if e["full_name"] == "data/nightly")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    served = {d.name: d for d in runner_deployments(select(entries, ["data/*", "bakeoff/*"]))}
    (schedule,) = served["nightly"].schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.active
    (weekly,) = served["weekly"].schedules
    assert not weekly.active  # declared but off until switched on
    assert served["nightly"].parameters["config_path"] == "conf/demo.yaml"
    assert runner_deployments(select(entries, ["data/*"]), with_schedules=False)[0].schedules in (None, [])


def test_select_by_pattern(entries):
    assert [e["full_name"] for e in select(entries, ["pipeline/*"])] == ["pipeline/demo", "pipeline/tiny"]
    assert select(entries, None) == entries
    with pytest.raises(ValueError, match="no deployment matches nope"):
        select(entries, ["nope"])


def test_serve_lists_without_a_server_and_refuses_to_serve_without_one(capsys, monkeypatch):
    assert main(["serve", "--list"]) == 0
    out = capsys.readouterr().out
    assert "data/nightly" in out and "0 2 * * *" in out and "bakeoff/weekly" in out and "(off)" in out
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("TOKENMILL_HOME", "/nonexistent-tokenmill-home")
    assert main(["serve", "pipeline/tiny"]) == 2
    assert "tokenmill up" in capsys.readouterr().err


def test_bakeoff_sizes_match_parameters_and_tokens():
    cfg = load_config(PREFECT_FILE.parent / "conf" / "tiny.yaml")
    sizes = bakeoff_sizes(cfg, ["gpt", "bert", "t5"], vocab_size=1024)
    gpt = sizes["gpt"]["parameters"]
    assert all(abs(s["parameters"] - gpt) / gpt < 0.4 for s in sizes.values())
    assert sizes["t5"]["model"]["n_layer"] == sizes["t5"]["model"]["n_decoder_layer"] >= 1
    assert len({s["input_tokens"] for s in sizes.values()}) == 1
    budget = bakeoff_sizes(cfg, ["gpt"], vocab_size=1024, token_budget=100_000)["gpt"]
    assert budget["input_tokens"] >= 100_000 > budget["input_tokens"] - 16 * 64  # whole steps of 16 x 64
    with pytest.raises(ValueError, match="unknown family"):
        bakeoff_sizes(cfg, ["gpt", "rnn"], vocab_size=1024)
