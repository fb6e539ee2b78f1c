"""The data ablation end to end on one WARC file: two recipes, one shared tokenizer, the same training tokens, the
same held-out evaluation tokens, MLflow parent + children, the comparison in MLflow and Prefect."""

import json
from pathlib import Path

import pytest
import yaml

from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # two data jobs, a tokenizer, three trainings


@pytest.fixture(scope="module")
def ablation(prefect_harness, tmp_path_factory):
    from tokenmill.flows.ablation import ablation_flow

    tmp = tmp_path_factory.mktemp("ablation")
    clean = tmp / "clean.jsonl"  # a held-out text no recipe has (a unit test covers one that a recipe has)
    held = " ".join(
        f"Held-out sentence number {i} talks about rivers, bridges and the weather of spring." for i in range(40)
    )
    clean.write_text(json.dumps({"id": "held-1", "text": held}) + "\n")
    plan = tmp / "recipes.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "recipes": {
                    "raw": {"steps": ["extract"]},
                    "filtered+c4": {"steps": ["extract", "langid", "gopher_quality", "c4"]},  # "+": not in MLflow keys
                },
                "clean_eval": str(clean),
                "eval_docs": 16,
                "noise_seeds": 1,
            },
            sort_keys=False,  # the first recipe is the one trained with a second seed
        )
    )
    result = ablation_flow(
        config_path=str(REPO_ROOT / "conf" / "tiny.yaml"),
        overrides=[f"run.output_dir={tmp / 'runs'}", "train.max_steps=8", "train.nproc=1", "train.eval_max_blocks=16"],
        recipes_path=str(plan),
    )
    return result


def test_same_training_tokens_and_same_evaluation_tokens(ablation):
    runs = ablation["runs"]
    assert [(r["recipe"], r["seed"]) for r in runs] == [("raw", 1234), ("filtered+c4", 1234), ("raw", 1235)]
    assert len({r["tokens_seen"] for r in runs}) == 1 and runs[0]["tokens_seen"] > 0
    sets = set(runs[0]["scores"])
    assert {"val-raw", "val-filtered+c4"} <= sets
    for name in sets:
        assert len({r["scores"][name]["validation_tokens"] for r in runs}) == 1, name
    # the recipes differ in what they kept, and their models in what they learned
    losses = {r["recipe"] + str(r["seed"]): r["scores"]["val-raw"]["token_loss"] for r in runs}
    assert len(set(losses.values())) == 3


def test_one_tokenizer_and_decontaminated_heldout(ablation):
    held = read_manifest(ablation["heldout_manifest"], stage="heldout")
    tokenizers = {
        read_manifest(p, stage="tokenize")["tokenizer"]["sha256"]
        for p in Path(ablation["heldout_manifest"]).parents[1].glob("*/tokens/manifest.json")
    }
    assert tokenizers == {held["tokenizer"]["sha256"]}
    raw, filtered = held["sets"]["val-raw"], held["sets"]["val-filtered+c4"]
    assert 0 < raw["documents_before"] <= 16 and raw["documents"] + raw["removed"] == raw["documents_before"]
    assert 0 < filtered["documents_before"] <= raw["documents_before"]  # filtering keeps a subset
    assert set(raw["removed_by_recipe"]) == {"raw", "filtered+c4"}
    assert held["sets"]["clean"]["documents"] == 1 and held["sets"]["clean"]["removed"] == 0


def test_parent_children_and_comparison(ablation, tmp_path):
    from mlflow.tracking import MlflowClient
    from prefect.artifacts import Artifact

    client = MlflowClient(tracking_uri=ablation["tracking_uri"])
    parent = client.get_run(ablation["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.params["recipe.name"] for c in children) == ["filtered+c4", "raw", "raw"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(
        {"heldout/val-raw/token_loss", "heldout/val-filtered_c4/token_loss"} <= set(c.data.metrics) for c in children
    )
    assert (
        parent.data.metrics["filtered_c4/val-raw"]
        == next(r for r in ablation["rows"] if r["recipe"] != "raw")["val-raw"]
    )
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")}
    assert names == {
        "ablation/comparison.png",
        "ablation/comparison.json",
        "ablation/comparison.csv",
        "ablation/comparison_table.json",
    }
    logged = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "ablation/comparison.json", str(tmp_path))).read_text()
    )
    assert logged["rows"] == ablation["rows"]
    raw = next(r for r in ablation["rows"] if r["recipe"] == "raw")
    assert raw["seeds"] == 2 and raw["val-raw_spread"] > 0
    assert json.loads(Artifact.get("ablation-comparison").data) == ablation["rows"]
    assert Artifact.get("ablation-chart").data.startswith("![ablation](data:image/png;base64,")
