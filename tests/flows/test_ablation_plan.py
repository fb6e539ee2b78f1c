"""The ablation's recipes file and its comparison rows (the flow itself: test_ablation_e2e.py)."""

import pytest

from tokenmill.core.config import ConfigError
from tokenmill.flows.ablation import Recipe, comparison_rows, load_plan


def test_default_plan_is_raw_filtered_dedup():
    plan = load_plan()
    assert [r.name for r in plan.recipes] == ["raw", "filtered", "filtered+dedup"]
    raw, filtered, dedup = plan.recipes
    assert raw.steps == ["extract"]
    assert set(dedup.steps) - set(filtered.steps) == {"exact_dedup", "url_dedup", "minhash"}
    assert raw.config_overrides() == ["data.steps=[extract]"]
    assert plan.noise_seeds >= 1 and plan.ngram_size == 13


@pytest.mark.parametrize(
    "text, message",
    [
        ("recipes: {a: {steps: [extract]}}", "at least two recipes"),
        ("recipes: {a: {steps: [extract]}, b: {steps: []}}", "non-empty steps"),
        ("recipes: {a: {steps: [extract]}, 'b/c': {steps: [extract]}}", "names folders"),
        ("recipes: {a: {steps: [extract], sets: []}, b: {steps: [extract]}}", "unknown key"),
        ("recipe: {}", "unknown key"),
        ("recipes: {a: {steps: [x]}, b: {steps: [y]}}\nclean_eval: /nonexistent.jsonl", "does not exist"),
    ],
)
def test_bad_plans_are_config_errors(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_plan(path)


def test_only_picks_and_orders(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("recipes: {a: {steps: [extract]}, b: {steps: [extract, langid], set: [data.langid.threshold=0.5]}}")
    plan = load_plan(path, ["b", "a"])
    assert [r.name for r in plan.recipes] == ["b", "a"]
    assert plan.recipes[0].config_overrides() == ["data.steps=[extract, langid]", "data.langid.threshold=0.5"]
    with pytest.raises(ConfigError, match="no recipe c"):
        load_plan(path, ["a", "c"])


def test_rows_carry_the_seed_spread():
    a, b = Recipe("a", ["extract"]), Recipe("b", ["extract", "langid"])

    def scores(x, y):
        return {"clean": {"token_loss": x}, "val-a": {"token_loss": y}}

    trained = [
        (a, 1, {"tokens_seen": 100}, scores(5.0, 6.0), "r1"),
        (b, 1, {"tokens_seen": 100}, scores(4.5, 6.5), "r2"),
        (a, 2, {"tokens_seen": 100}, scores(5.2, 5.9), "r3"),
    ]
    rows = comparison_rows(trained, ["clean", "val-a"], seed=1)
    assert [r["recipe"] for r in rows] == ["a", "b"]
    assert rows[0]["clean"] == 5.0 and rows[0]["clean_spread"] == pytest.approx(0.2)
    assert rows[0]["val-a_spread"] == pytest.approx(0.1) and rows[0]["seeds"] == 2
    assert rows[1]["clean_spread"] is None and rows[1]["mean_loss"] == pytest.approx(5.5)
    assert rows[0]["mlflow_run_id"] == "r1"
