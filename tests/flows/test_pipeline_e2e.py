"""End to end: the real pipeline flow on one WARC file of the sample corpus.

Real Spark (local), real Prefect (test harness API), DeepSpeed ZeRO-2 with 2 processes
launched by torchrun, MLflow in a temporary SQLite store.
"""

import csv
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tokenmill.core.manifest import read_manifest, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]
SLICE = "data/sample/crawl-00001.warc.gz"  # what the session's ``pipeline_run`` fixture (conftest.py) reads


pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # the session's real pipeline run


def test_data_manifest_accounts_for_every_record(pipeline_run):
    m = read_manifest(pipeline_run["data_manifest"], stage="data")
    counts = m["counts"]
    dropped, quarantined = sum(counts["dropped"].values()), sum(counts["quarantined"].values())
    assert counts["read"] == counts["kept"] + dropped + quarantined
    with open(REPO_ROOT / "data" / "sample" / "manifest.tsv") as fh:
        truth = [r for r in csv.DictReader(fh, delimiter="\t") if r["file"] == Path(SLICE).name]
    assert counts["read"] == len(truth)  # every response record of the file was read
    assert counts["dropped"].get("extract_not_html") == sum(r["kind"] == "non-html" for r in truth)
    assert counts["kept"] > 0.4 * counts["read"]
    funnel = m["funnel"]
    assert [r["stage"] for r in funnel] == ["read", *m["config"]["steps"]]
    assert all(a["out"] == b["in"] for a, b in zip(funnel, funnel[1:]))
    assert funnel[-1]["out"] == counts["kept"]

    rows = {
        name: sum(pq.ParquetFile(s["path"]).metadata.num_rows for s in shards) for name, shards in m["outputs"].items()
    }
    assert rows == {"kept": counts["kept"], "rejected": dropped, "quarantine": quarantined}
    assert len(m["outputs"]["kept"]) >= 1
    for shard in m["outputs"]["kept"]:
        assert sha256_file(shard["path"]) == shard["sha256"]
    # The input's identity is what listing it gave (size and mtime), not a hash: the driver reads no input.
    (given,) = m["inputs"]
    assert given["path"] == str(REPO_ROOT / SLICE) and given["format"] == "warc" and "sha256" not in given
    assert given["bytes"] == (REPO_ROOT / SLICE).stat().st_size and given["mtime"]


def test_rejected_rows_carry_reasons_and_duplicates_point_at_kept_copies(pipeline_run):
    m = read_manifest(pipeline_run["data_manifest"], stage="data")
    rejected = pq.read_table([s["path"] for s in m["outputs"]["rejected"]][0]).to_pylist()
    kept = {r["id"]: r["text"] for s in m["outputs"]["kept"] for r in pq.read_table(s["path"]).to_pylist()}
    assert all(r["reason"] for r in rejected)

    def norm(t):
        return re.sub(r"\s+", " ", t.strip()).lower()

    for r in rejected:
        if r["reason"] == "exact_dedup_duplicate":
            assert norm(kept[r["duplicate_of"]]) == norm(r["text"])
    assert set(kept).isdisjoint(r["id"] for r in rejected)


def test_token_shards_split_every_kept_document(pipeline_run):
    from tokenmill.core.indexed import IndexedShard

    data = read_manifest(pipeline_run["data_manifest"], stage="data")
    tokens = read_manifest(pipeline_run["tokens_manifest"], stage="tokenize")
    assert sum(split["documents"] for split in tokens["splits"].values()) == data["counts"]["kept"]
    for split in tokens["splits"].values():
        shards = [IndexedShard(s["prefix"]) for s in split["shards"]]
        assert sum(s.num_sequences for s in shards) == split["documents"]
        assert sum(s.num_tokens for s in shards) == split["tokens"]
        assert all(s.document(i)[-1] == tokens["tokenizer"]["eot_id"] for s in shards for i in range(s.num_sequences))


def test_mlflow_run_finished_with_metrics_and_artifacts(pipeline_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pipeline_run["tracking_uri"])
    run = client.get_run(pipeline_run["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.zero_stage"] == "2"
    assert run.data.params["train.world_size"] == "2"
    for key in ("val/loss", "val/unigram_baseline_loss", "train/tokens_per_s", "train/lr"):
        assert key in run.data.metrics, key
    # counts are params and the funnel a table: the charts are the curves
    assert not [k for k in run.data.metrics if k.startswith(("data/", "tokens/"))]
    assert {"corpus.documents_kept", "corpus.train_tokens"} <= set(run.data.params)

    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert len(losses) == 30  # 300 steps, logged every 10
    assert losses[-1] < losses[0] - 0.5  # training loss falls

    def listing(path=None):
        out = []
        for f in client.list_artifacts(run.info.run_id, path):
            out += listing(f.path) if f.is_dir else [f.path]
        return out

    assert {
        "config/config.yaml",
        "config/deepspeed_config.json",
        "data/manifest.json",
        "data/funnel.png",
        "data/funnel_table.json",
        "tokens/manifest.json",
        "model/MLmodel",
        "model/model/model.safetensors",
        "model/components/tokenizer/tokenizer.json",
        "samples/final.txt",
        "attention/attention_layer_0.png",
        "train/manifest.json",
        "plots/loss_curve.png",
    } <= set(listing())
    # each artifact once: one copy of the weights, one of the tokenizer
    names = [Path(p).name for p in listing()]
    assert sum(n.endswith(".safetensors") for n in names) == 1, listing()
    assert names.count("tokenizer.json") == 1, listing()
    # lineage: the run names the data it was trained on and the Prefect flow run that made it
    data = read_manifest(pipeline_run["data_manifest"], stage="data")
    assert run.data.tags["tokenmill.data_manifest"] == pipeline_run["data_manifest"]
    assert run.data.tags["tokenmill.data_sha256"] == sha256_file(pipeline_run["data_manifest"])
    assert run.data.tags["tokenmill.prefect_flow_run_id"]
    assert str(data["counts"]["kept"]) == run.data.params["corpus.documents_kept"]
    (version,) = client.search_model_versions(f"run_id='{run.info.run_id}'")
    assert version.name == "tokenmill-tiny-gpt"


def test_the_registered_model_loads_through_mlflow_and_generates(pipeline_run, monkeypatch):
    """``models:/<name>/<version>`` is an MLflow model: pyfunc and transformers load it; past the context it
    keeps the prompt's end or refuses, never an IndexError."""
    import mlflow.pyfunc
    import mlflow.transformers
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=pipeline_run["tracking_uri"])
    (version,) = client.search_model_versions(f"run_id='{pipeline_run['mlflow_run_id']}'")
    uri = f"models:/{version.name}/{version.version}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pipeline_run["tracking_uri"])  # where models:/ is looked up
    model = mlflow.pyfunc.load_model(uri)
    (text,) = model.predict(["The President"], params={"max_new_tokens": 8})
    assert text.startswith("The President") and len(text) > len("The President")
    (text,) = model.predict(["the state of the union " * 40], params={"max_new_tokens": 8})  # > 64 tokens
    assert text
    with pytest.raises(Exception, match="exceeds the models max length") as err:
        model.predict(["The"], params={"max_new_tokens": 100})
    assert not isinstance(err.value, IndexError)
    pipe = mlflow.transformers.load_model(uri)
    assert pipe.tokenizer.model_max_length == 64  # conf/tiny.yaml block_size


def test_saved_weights_reproduce_the_reported_validation_loss(pipeline_run):
    """The model folder holds the model that was evaluated: a fresh single-process load scores the same."""
    from tokenmill.core.config import load_config
    from tokenmill.training.data import open_split
    from tokenmill.training.objectives import build_objective
    from tokenmill.training.weights import load_model

    result = read_manifest(pipeline_run["train_manifest"], stage="train")
    tokens = read_manifest(pipeline_run["tokens_manifest"], stage="tokenize")
    model, _ = load_model(result["model"]["folder"])
    assert result["weights"]["sha256"] == sha256_file(Path(result["model"]["folder"]) / "weights.safetensors")
    val = open_split(tokens, "validation")
    objective = build_objective(
        "gpt",
        val,
        block_size=model.cfg.block_size,
        specials=tokens["tokenizer"]["special_tokens"],
        seed=0,
        vocab_size=tokens["tokenizer"]["vocab_size"],
    )
    total, count = 0.0, 0.0
    with torch.no_grad():
        cfg = load_config(Path(pipeline_run["run_dir"]) / "config.yaml")
        for batch in objective.eval_batches(val, cfg.train.eval_max_blocks, batch_size=8):
            s, n = objective.loss(model, batch)[1]["loss"]
            total, count = total + s, count + n
    assert total / count == pytest.approx(result["val_loss"], abs=1e-4)
    assert result["val_loss"] < result["unigram_baseline_loss"]
    assert result["val_metrics"]["loss"] == result["val_loss"] == result["token_loss"]


def test_prefect_ui_artifacts_published(pipeline_run):
    from prefect.artifacts import Artifact

    funnel = Artifact.get("data-funnel")
    data = read_manifest(pipeline_run["data_manifest"], stage="data")
    table = json.loads(funnel.data)
    assert table == data["funnel"]
    assert list(table[0]) == ["stage", "in", "dropped", "quarantined", "out"]  # reading order, not the manifest's
    assert Artifact.get("final-metrics") is not None
    assert Artifact.get("data-funnel-chart").data.startswith("![data funnel](data:image/png;base64,")
    assert pipeline_run["mlflow_run_id"] in Artifact.get("mlflow-run").data
    tokens = read_manifest(pipeline_run["tokens_manifest"], stage="tokenize")
    summary = {row["item"]: row["value"] for row in json.loads(Artifact.get("tokenizer-summary").data)}
    assert f"{tokens['tokenizer']['vocab_size']:,} tokens" in summary["tokenizer"]
    assert summary["train split"].startswith(f"{tokens['splits']['train']['documents']:,} documents")
    evaluation = {row["metric"]: row for row in json.loads(Artifact.get("evaluation").data)}
    again, during = evaluation["loss"]["evaluate"], evaluation["loss"]["during training"]  # same weights and examples
    if read_manifest(pipeline_run["train_manifest"], stage="train")["precision"] == "fp32":
        assert again == during
    else:  # trained in bf16 (precision auto here): bf16 arithmetic in training, fp32 in evaluate, each to 4 decimals
        assert again == pytest.approx(during, abs=2e-4)


def test_the_root_run_carries_the_pipeline_summary(pipeline_run):
    """The pipeline's own run shows the outcome: counts, tokens, metrics, the MLflow run and every stage's run."""
    from prefect import get_client
    from prefect.artifacts import Artifact

    summary = Artifact.get("pipeline-summary")
    assert str(summary.flow_run_id) == pipeline_run["flow_run_id"]  # on the root run, not a subflow
    data = read_manifest(pipeline_run["data_manifest"], stage="data")["counts"]
    text = summary.data
    assert f"{data['read']:,} read: {data['kept']:,} kept" in text
    assert pipeline_run["mlflow_run_id"] in text
    assert f"{pipeline_run['val_loss']:.4f}" in text
    assert set(pipeline_run["stage_flow_runs"]) == {"data", "tokenize", "train", "evaluate"}
    with get_client(sync_client=True) as client:
        for name, flow_run_id in pipeline_run["stage_flow_runs"].items():
            assert flow_run_id in text
            run = client.read_flow_run(flow_run_id)
            assert run.parent_task_run_id is not None and run.state.is_completed(), name  # a subflow of the root


def test_crashed_training_fails_the_flow_and_the_mlflow_run(prefect_harness, tmp_path):
    """n_head=3 does not divide n_embd=64: the training processes die, and nothing pretends otherwise."""
    from mlflow.tracking import MlflowClient

    from tokenmill.flows.pipeline import pipeline_flow

    state = pipeline_flow(
        config_path=str(REPO_ROOT / "conf" / "tiny.yaml"),
        overrides=[f"run.output_dir={tmp_path}", "model.n_head=3", "train.max_steps=2"],
        return_state=True,
    )
    assert state.is_failed()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("tokenmill").experiment_id])
    assert run.info.status == "FAILED"
    assert "training exited with code" in run.data.tags["error"]
    assert "is not divisible by n_head 3" in run.data.tags["error"]


def test_rerunning_the_data_job_gives_identical_shards(pipeline_run, tmp_path):
    from tokenmill.core.config import load_config
    from tokenmill.spark_jobs.clean import run_clean_job

    first = read_manifest(pipeline_run["data_manifest"], stage="data")
    cfg = load_config(Path(pipeline_run["run_dir"]) / "config.yaml")
    again = run_clean_job(cfg.data, tmp_path / "data")
    assert again["counts"] == first["counts"]

    def digests(m):
        return [(s["rows"], s["sha256"]) for s in m["outputs"]["kept"]]

    assert digests(again) == digests(first)
