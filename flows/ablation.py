"""``ablation`` flow: does the cleaning pay? The same model trained on each cleaning recipe, scored on held-out text.

Per recipe (``conf/ablation.yaml``: a ``data.steps`` list plus overrides) the data stage runs (cached per recipe
like the pipeline's); one tokenizer is trained on a sample of the union of every recipe's kept text, so the losses
compare; each recipe is tokenized with it and trains the same model with the same seed on the same number of
tokens (``train.max_steps`` x global batch x context: a smaller corpus is repeated more often). Every model is
scored on the same held-out sets (``spark_jobs.heldout``: a shipped clean set and each recipe's validation
documents, decontaminated against every recipe's training text). The first recipe also trains with
``noise_seeds`` more seeds, which measures how far two runs of one recipe fall apart.

MLflow: one parent run, each training a child run (params: the recipe; metrics: ``heldout/<set>/token_loss``); the
comparison as a table, bar chart, CSV and JSON on the parent and as Prefect artifacts.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tokenmill.core import tracking
from tokenmill.core.config import Config, ConfigError, dump_config
from tokenmill.core.env import REPO_ROOT
from tokenmill.core.manifest import read_manifest, sha256_file
from tokenmill.flows.data import data_flow
from tokenmill.flows.tasks import cached_train_model, mlflow_run_url, prefect_lineage
from tokenmill.flows.tokens import tokenize_flow
from tokenmill.resolve import resolve_and_dump, resolve_config

DEFAULT_PLAN = REPO_ROOT / "conf" / "ablation.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def mlflow_key(name: str) -> str:
    """``name`` as MLflow takes it in a param or metric key: a recipe's ``+`` becomes ``_`` (filtered_dedup)."""
    return name.replace("+", "_")


@dataclasses.dataclass
class Recipe:
    name: str
    steps: list[str]
    overrides: list[str] = dataclasses.field(default_factory=list)

    def config_overrides(self) -> list[str]:
        return [f"data.steps=[{', '.join(self.steps)}]", *self.overrides]


@dataclasses.dataclass
class AblationPlan:
    recipes: list[Recipe]
    clean_eval: str | None = None
    eval_docs: int = 64
    ngram_size: int = 13
    noise_seeds: int = 1


def load_plan(path: str | Path | None = None, only: list[str] | None = None) -> AblationPlan:
    """The recipes file (default ``conf/ablation.yaml``), checked: known keys only, names usable in paths, steps a
    non-empty list; ``only`` keeps those recipes, in that order. Raises ConfigError."""
    path = Path(path or DEFAULT_PLAN)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    unknown = set(raw) - {f.name for f in dataclasses.fields(AblationPlan)}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    recipes = []
    for name, body in (raw.get("recipes") or {}).items():
        name = str(name)
        if not _NAME.match(name):
            raise ConfigError(f"{path}: recipe name {name!r} must be letters, digits and _ . + - (it names folders)")
        body = body or {}
        if set(body) - {"steps", "set"}:
            raise ConfigError(
                f"{path}: recipe {name!r}: unknown key(s) {', '.join(sorted(set(body) - {'steps', 'set'}))}"
            )
        steps = body.get("steps")
        if not isinstance(steps, list) or not steps:
            raise ConfigError(f"{path}: recipe {name!r} needs a non-empty steps list")
        recipes.append(Recipe(name, [str(s) for s in steps], [str(o) for o in body.get("set") or []]))
    if only:
        by_name = {r.name: r for r in recipes}
        missing = [n for n in only if n not in by_name]
        if missing:
            raise ConfigError(f"{path}: no recipe {', '.join(missing)} (there are {', '.join(by_name)})")
        recipes = [by_name[n] for n in only]
    if len(recipes) < 2:
        raise ConfigError(f"{path}: an ablation compares at least two recipes, got {len(recipes)}")
    plan = AblationPlan(recipes, **{k: v for k, v in raw.items() if k != "recipes"})
    if plan.clean_eval is not None:
        clean = Path(plan.clean_eval)
        plan.clean_eval = str(clean if clean.is_absolute() else REPO_ROOT / clean)
        if not Path(plan.clean_eval).exists():
            raise ConfigError(f"{path}: clean_eval {plan.clean_eval} does not exist")
    if plan.eval_docs < 1 or plan.ngram_size < 1 or plan.noise_seeds < 0:
        raise ConfigError(f"{path}: eval_docs and ngram_size must be >= 1, noise_seeds >= 0")
    return plan


@task(name="shared-tokenizer", retries=1, retry_delay_seconds=5)
def shared_tokenizer(cfg: Config, data_manifests: list[str], out_path: str) -> str:
    """One tokenizer for every recipe, trained on a sample of the union of their kept text; reused while the data
    manifests it came from are unchanged."""
    from tokenmill.spark_jobs.tokenize import train_shared_tokenizer

    stamp = Path(out_path).with_name("sources.json")
    sources = {"data": [sha256_file(m) for m in data_manifests], "tokenizer": dataclasses.asdict(cfg.tokenizer)}
    if Path(out_path).is_file() and stamp.is_file() and json.loads(stamp.read_text()) == sources:
        return out_path
    train_shared_tokenizer(data_manifests, out_path, cfg)
    stamp.write_text(json.dumps(sources))
    return out_path


@task(name="heldout-sets", retries=1, retry_delay_seconds=5)
def heldout_sets(cfg: Config, plan: AblationPlan, data_manifests: dict[str, str], tokenizer: str, out_dir: str) -> str:
    """The held-out evaluation sets, decontaminated against every recipe's training text; returns the manifest."""
    from tokenmill.spark_jobs.heldout import build_heldout_sets

    build_heldout_sets(
        data_manifests,
        plan.clean_eval,
        tokenizer,
        out_dir,
        cfg,
        max_docs=plan.eval_docs,
        ngram_size=plan.ngram_size,
    )
    return str(Path(out_dir) / "manifest.json")


@task(name="score-heldout", retries=1, retry_delay_seconds=5)
def score_model(cfg: Config, train_manifest: str, heldout_manifest: str) -> dict[str, dict[str, Any]]:
    """The model on every held-out set, in its own process (``training.evaluate --heldout-manifest``)."""
    out = Path(train_manifest).parent / "heldout-scores.json"
    config_file = Path(train_manifest).parent / "heldout-config.yaml"
    dump_config(cfg, config_file)
    cmd = [
        sys.executable,
        "-m",
        "tokenmill.training.evaluate",
        "--train-manifest",
        train_manifest,
        "--run-config",
        str(config_file),
        "--heldout-manifest",
        heldout_manifest,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"held-out scoring exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    get_run_logger().info(proc.stdout.strip())
    return json.loads(out.read_text())


@flow(name="ablation", log_prints=True)
def ablation_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    recipes_path: str | None = None,
    recipes: list[str] | None = None,
) -> dict[str, Any]:
    """Train the run's model on each recipe's data and score every model on the same held-out sets; returns the
    parent MLflow run id, the comparison rows, the held-out manifest and the chart's path."""
    logger = get_run_logger()
    plan = load_plan(recipes_path, recipes)
    overrides = list(overrides or [])
    cfg, _ = resolve_and_dump(config_path, overrides)
    out = cfg.run_dir.resolve() / "ablation"
    tokenizer_path = out / "tokenizer" / "tokenizer.json"

    # Each recipe is a run of its own under <run>/ablation/<recipe>/ (data/, tokens/, config.yaml), every one
    # tokenized with the shared tokenizer.
    resolved: dict[str, str] = {}
    for recipe in plan.recipes:
        _, resolved[recipe.name] = resolve_and_dump(
            config_path,
            [
                *overrides,
                *recipe.config_overrides(),
                f"run.output_dir={out}",
                f"run.name={recipe.name}",
                f"tokenizer.from_pretrained={tokenizer_path}",
                f"tracking.uri={cfg.tracking_uri}",  # the parent's store, whatever run.output_dir does to the default
            ],
        )
    data = {name: data_flow(path) for name, path in resolved.items()}
    shared_tokenizer(cfg, list(data.values()), str(tokenizer_path))
    tokens = {name: tokenize_flow(data[name], path) for name, path in resolved.items()}
    heldout = heldout_sets(cfg, plan, data, str(tokenizer_path), str(out / "heldout"))
    held = read_manifest(heldout, stage="heldout")

    with tracking.parent_run(
        cfg.tracking_uri,
        cfg.tracking.experiment,
        f"{cfg.run.name}-ablation",
        tags={"tokenmill.stage": "ablation", **prefect_lineage(), "tokenmill.ablation_recipes": ",".join(resolved)},
    ) as parent:
        mlf = tracking.MlflowLogger(cfg.tracking_uri, parent)
        mlf.log_params(
            {
                "ablation.recipes": ",".join(resolved),
                "ablation.noise_seeds": plan.noise_seeds,
                "ablation.eval_docs": plan.eval_docs,
                "ablation.clean_eval": plan.clean_eval or "",
                **{f"ablation.{mlflow_key(r.name)}.steps": ",".join(r.steps) for r in plan.recipes},
            }
        )
        # (recipe, seed) of every training: each recipe once, then the first one with noise_seeds more seeds
        runs = [(recipe, cfg.run.seed) for recipe in plan.recipes]
        runs += [(plan.recipes[0], cfg.run.seed + k) for k in range(1, plan.noise_seeds + 1)]
        trained = []
        for recipe, seed in runs:
            rcfg = resolve_config(resolved[recipe.name], [f"run.seed={seed}"])
            suffix = "" if seed == cfg.run.seed else f"-seed{seed}"
            logger.info("ablation: training on recipe %s (seed %d)", recipe.name, seed)
            result = cached_train_model(
                rcfg,
                tokens[recipe.name],
                str(out / recipe.name / f"train{suffix}"),
                f"{cfg.run.name}-ablation-{recipe.name}{suffix}",
                parent_run_id=parent,
                tags={"tokenmill.ablation_parent": parent, "tokenmill.ablation_recipe": recipe.name},
            )
            scores = score_model(rcfg, result["train_manifest"], heldout)
            train = read_manifest(result["train_manifest"], stage="train")
            child = tracking.MlflowLogger(cfg.tracking_uri, result["mlflow_run_id"])
            child.log_params({"recipe.name": recipe.name, "recipe.steps": ",".join(recipe.steps)})
            child.log_params({f"recipe.set.{i}": o for i, o in enumerate(recipe.overrides)})
            child.log_metrics(
                {f"heldout/{mlflow_key(s)}/token_loss": v["token_loss"] for s, v in scores.items()}
                | {f"heldout/{mlflow_key(s)}/tokens": v["validation_tokens"] for s, v in scores.items()}
                | {"tokens_seen": train["tokens_seen"]},
                step=train["steps"],
            )
            trained.append((recipe, seed, train, scores, result["mlflow_run_id"]))
        rows = comparison_rows(trained, list(held["sets"]), cfg.run.seed)
        chart = _publish(cfg, parent, rows, held, out)
    return {
        "parent_run_id": parent,
        "rows": rows,
        "runs": [
            {"recipe": r.name, "seed": s, "tokens_seen": t["tokens_seen"], "scores": sc, "mlflow_run_id": rid}
            for r, s, t, sc, rid in trained
        ],
        "heldout_manifest": heldout,
        "chart": str(chart),
        "tracking_uri": cfg.tracking_uri,
    }


def comparison_rows(trained: list[tuple], sets: list[str], seed: int) -> list[dict[str, Any]]:
    """One row per recipe: its main-seed loss on every held-out set, ``<set>_spread`` (max - min over its seeds; None
    for a recipe trained with one seed) and ``seeds``."""
    rows = []
    recipes = {r.name: r for r, *_ in trained}
    for recipe in recipes.values():
        mine = [(s, t, sc, rid) for r, s, t, sc, rid in trained if r.name == recipe.name]
        main = next(m for m in mine if m[0] == seed)
        row: dict[str, Any] = {
            "recipe": recipe.name,
            "steps": " ".join(recipe.steps),
            "tokens_seen": main[1]["tokens_seen"],
        }
        for s in sets:
            values = [sc[s]["token_loss"] for _, _, sc, _ in mine if s in sc]
            row[s] = round(main[2][s]["token_loss"], 4) if s in main[2] else None
            row[f"{s}_spread"] = round(max(values) - min(values), 4) if len(values) > 1 else None
        row["seeds"] = len(mine)
        scored = [v for s in sets if (v := row[s]) is not None]
        row["mean_loss"] = round(statistics.mean(scored), 4) if scored else None
        row["mlflow_run_id"] = main[3]
        rows.append(row)
    return rows


def _publish(cfg: Config, parent: str, rows: list[dict], held: dict, out: Path) -> Path:
    """The comparison as a Prefect table and chart, and as MLflow artifacts and metrics on the parent run."""
    from tokenmill.core.plots import ablation_chart

    sets = [s for s, e in held["sets"].items() if "split" in e]
    chart = ablation_chart(rows, sets, out / "comparison.png")
    (out / "comparison.json").write_text(json.dumps({"rows": rows, "heldout": held["sets"]}, indent=2))
    columns = list(rows[0])
    with open(out / "comparison.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    mlf = tracking.MlflowLogger(cfg.tracking_uri, parent)
    for name in ("comparison.png", "comparison.json", "comparison.csv"):
        mlf.log_artifact(out / name, "ablation")
    mlf.log_table({c: [r[c] for r in rows] for c in columns}, "ablation/comparison_table.json")  # MLflow's table view
    mlf.log_metrics({mlflow_key(f"{r['recipe']}/{s}"): r[s] for r in rows for s in sets if r[s] is not None}, step=0)
    decon = [
        {
            "set": s,
            "documents_before": e["documents_before"],
            "removed": e["removed"],
            **{f"removed_by_{r}": n for r, n in e["removed_by_recipe"].items()},
            "documents": e["documents"],
            "tokens": e["tokens"],
        }
        for s, e in held["sets"].items()
    ]
    create_table_artifact(
        key="ablation-comparison",
        table=rows,
        description="Held-out token loss (nats) of the same model trained on each recipe",
    )
    create_table_artifact(
        key="ablation-heldout", table=decon, description="Held-out sets before and after decontamination"
    )
    png = base64.b64encode(chart.read_bytes()).decode()
    create_markdown_artifact(
        key="ablation-chart",
        description="The ablation as a chart",
        markdown=f"![ablation](data:image/png;base64,{png})\n\nParent MLflow run `{parent}`: "
        f"{mlflow_run_url(cfg.tracking_uri, parent)}",
    )
    return chart
