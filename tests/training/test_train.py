"""End to end, per family: `tokenmill train` (DeepSpeed ZeRO-2, 2 processes) on the token shards of the
session's pipeline run, then export to Hugging Face and back, generation and attention maps.

BERT, T5 and the original Transformer train here; GPT is the pipeline run itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenmill import cli
from tokenmill.core.manifest import read_manifest
from tokenmill.training.data import open_split
from tokenmill.training.objectives import build_objective
from tokenmill.training.weights import load_model

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 60

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # DeepSpeed training processes


def train(tokens_manifest: str, out: Path, *overrides: str) -> dict:
    sets = [
        x
        for o in [f"run.output_dir={out.parent}", f"train.max_steps={STEPS}", "train.log_every=10", *overrides]
        for x in ("--set", o)
    ]
    assert (
        cli.main(
            [
                "train",
                "--config",
                str(REPO_ROOT / "conf" / "tiny.yaml"),
                *sets,
                "--tokens",
                tokens_manifest,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return read_manifest(out / "manifest.json", stage="train")


@pytest.fixture(scope="module")
def trained(pipeline_run, tmp_path_factory):
    """family → (train manifest, output folder) for the three non-GPT families, trained once. BERT is the original
    post-LN one with learned positions, which has a Hugging Face equivalent (the default pre-LN RoPE BERT trains in
    the bake-off test)."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in ("bert", "t5", "transformer"):
        sets = [f"model.family={family}"] + (
            ["model.norm=post", "model.position=learned", "model.nsp_pool=cls"] if family == "bert" else []
        )
        out[family] = (train(pipeline_run["tokens_manifest"], root / family, *sets), root / family)
    return out


EXPECTED_METRICS = {
    "bert": {"loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"},
    "t5": {"loss", "span_loss", "span_accuracy"},
    "transformer": {"loss", "span_loss", "span_accuracy"},
}


@pytest.mark.parametrize("family", ["bert", "t5", "transformer"])
def test_each_family_trains_on_its_objective_and_logs_its_metrics(trained, family):
    from mlflow.tracking import MlflowClient

    manifest, folder = trained[family]
    objective = {"bert": "mlm_nsp", "t5": "span_corruption", "transformer": "span_corruption"}[family]
    assert (manifest["model"]["family"], manifest["model"]["objective"]) == (family, objective)
    assert set(manifest["val_metrics"]) == EXPECTED_METRICS[family]
    history = manifest["history"]
    assert history[-1]["train/loss"] < history[0]["train/loss"] - 0.3  # it learns
    assert 0.0 <= manifest["val_metrics"][next(iter(m for m in EXPECTED_METRICS[family] if "accuracy" in m))] <= 1.0
    assert manifest["token_loss"] < manifest["unigram_baseline_loss"] + 0.5

    client = MlflowClient(tracking_uri=f"sqlite:///{folder.parent}/mlflow.db")
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert {f"val/{m}" for m in EXPECTED_METRICS[family]} | {f"train/{m}" for m in EXPECTED_METRICS[family]} <= set(
        run.data.metrics
    )
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "attention")}
    assert artifacts and all(p.endswith(".png") for p in artifacts)
    if family != "bert":
        assert {"attention/attention_encoder_0.png", "attention/attention_cross_0.png"} <= artifacts
    model = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/MLmodel", "model/requirements.txt", "model/LICENSE.txt"} <= model  # an MLflow model
    assert ("model/components" in model) == (family == "bert")  # a transformers pipeline; else pyfunc from code


def _eval_batch(family: str, folder: Path, tokens_manifest: str) -> dict[str, torch.Tensor]:
    """Validation examples of the family's objective, padded (the parity must hold with padding)."""
    tokens = read_manifest(tokens_manifest, stage="tokenize")
    val = open_split(tokens, "validation")
    model, _ = load_model(folder)
    objective = build_objective(
        family,
        val,
        block_size=model.cfg.block_size,
        specials=tokens["tokenizer"]["special_tokens"],
        seed=0,
        vocab_size=tokens["tokenizer"]["vocab_size"],
    )
    batch = objective.eval_batches(val, 4, batch_size=4)[0]
    pad = tokens["tokenizer"]["special_tokens"]["pad"]
    pairs = {
        "gpt": [("input_ids", None)],
        "bert": [("input_ids", "attention_mask")],
        "t5": [("input_ids", "attention_mask"), ("decoder_input_ids", "decoder_attention_mask")],
    }
    for ids, mask in pairs.get(family, pairs["t5"]):  # pad the tail of every row but the first
        batch[ids][1:, -9:] = pad
        if mask:
            batch[mask][1:, -9:] = 0
    if family == "bert":
        batch["token_type_ids"][1:, -9:] = 0
    return batch


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "transformer"])
def test_export_loads_in_transformers_with_logit_parity(trained, pipeline_run, family, tmp_path):
    import transformers

    folder = (
        Path(read_manifest(pipeline_run["train_manifest"], stage="train")["model"]["folder"])
        if family == "gpt"
        else trained[family][1]
    )
    assert cli.main(["export", str(folder), "--out", str(tmp_path / "hf")]) == 0
    seen = read_manifest(folder / "manifest.json", stage="train")["tokens_seen"]
    assert f"- tokens seen: {seen:,}" in (tmp_path / "hf" / "README.md").read_text()  # the run's figures in the card
    ours, _ = load_model(folder)
    batch = _eval_batch(family, folder, pipeline_run["tokens_manifest"])
    auto = {
        "gpt": transformers.AutoModelForCausalLM,
        "bert": transformers.AutoModelForPreTraining,
        "t5": transformers.AutoModelForSeq2SeqLM,
        "transformer": transformers.AutoModelForSeq2SeqLM,
    }[family]
    hf = auto.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    with torch.no_grad():
        if family == "gpt":
            x = batch["input_ids"]
            mask = (torch.arange(x.size(1)) < x.size(1) - 9).long().expand_as(x).clone()
            mask[0] = 1
            a = ours(x, attention_mask=mask)
            b = hf(input_ids=x, attention_mask=mask).logits
            keep = mask.bool()
        elif family == "bert":
            kw = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            mlm, nsp = ours(**kw)
            out = hf(**kw)
            assert (nsp - out.seq_relationship_logits).abs().max() <= 1e-4
            a, b, keep = mlm, out.prediction_logits, batch["attention_mask"].bool()
        else:
            kw = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}
            a, b, keep = ours(**kw), hf(**kw).logits, batch["decoder_attention_mask"].bool()
        assert (~keep).any()
        assert (a[keep] - b[keep]).abs().max().item() <= 1e-4

    # The exported tokenizer is ours, framed the way the family was trained.
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(folder / "tokenizer.json")).encode("Hello world. A test.").ids
    ids = tok("Hello world. A test.")["input_ids"]
    specials = read_manifest(pipeline_run["tokens_manifest"], stage="tokenize")["tokenizer"]["special_tokens"]
    framed = {
        "gpt": plain,
        "bert": [specials["cls"], *plain, specials["sep"]],
        "t5": [*plain, specials["eot"]],
        "transformer": [*plain, specials["eot"]],
    }[family]
    assert ids == framed

    # ...and the folder imports back into tokenmill unchanged (a bias-free model comes back with zero biases).
    again, _ = load_model(tmp_path / "hf")
    mine, back = ours.state_dict(), again.state_dict()
    for name, p in mine.items():
        assert torch.equal(p, back[name]), name
    for name in set(back) - set(mine):
        assert name.endswith("bias") and not back[name].any(), name


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_greedy_generation_matches_transformers(trained, pipeline_run, family, tmp_path):
    import transformers

    folder = (
        Path(read_manifest(pipeline_run["train_manifest"], stage="train")["model"]["folder"])
        if family == "gpt"
        else trained[family][1]
    )
    cli.main(["export", str(folder), "--out", str(tmp_path / "hf")])
    ours, _ = load_model(folder)
    hf = transformers.AutoModelForCausalLM if family == "gpt" else transformers.AutoModelForSeq2SeqLM
    hf = hf.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    prompt = _eval_batch(family, folder, pipeline_run["tokens_manifest"])["input_ids"][:1, :12]
    mine = ours.generate(prompt, 12, temperature=0)  # no end-of-text stop on either side
    theirs = hf.generate(
        prompt, do_sample=False, num_beams=1, max_new_tokens=12, eos_token_id=None, pad_token_id=hf.config.pad_token_id
    )
    assert mine.tolist() == theirs.tolist()
    assert torch.equal(mine, ours.generate(prompt, 12, temperature=0, use_cache=False))


def test_continue_pretraining_from_an_exported_hugging_face_folder(pipeline_run, tmp_path):
    """Import: a GPT exported to HF, tokenizer included, is the starting point of a new run."""
    first = read_manifest(pipeline_run["train_manifest"], stage="train")
    hf_dir = tmp_path / "hf"
    assert cli.main(["export", first["model"]["folder"], "--out", str(hf_dir)]) == 0
    again = train(
        pipeline_run["tokens_manifest"],
        tmp_path / "continued",
        f"model.init_from={hf_dir}",
        "train.warmup_steps=1",
        "train.lr=0.0003",
    )
    assert again["model"]["init_from"] == str(hf_dir)
    # It starts where the first run ended, not from a random model's log(vocab).
    assert again["history"][0]["train/loss"] < first["history"][0]["train/loss"] - 0.5
    assert again["history"][0]["train/loss"] < first["history"][-1]["train/loss"] + 0.3


def test_generate_and_attention_commands(pipeline_run, tmp_path, capsys):
    folder = read_manifest(pipeline_run["train_manifest"], stage="train")["model"]["folder"]
    args = ["generate", folder, "--prompt", "The", "--temperature", "0", "--max-new-tokens", "8"]
    assert cli.main(args) == 0
    cached = capsys.readouterr().out
    assert cli.main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == cached and cached.startswith("The")
    assert (
        cli.main(["attention", folder, "--text", "The river runs by the old town.", "--out", str(tmp_path / "att")])
        == 0
    )
    pngs = sorted(p.name for p in (tmp_path / "att").glob("*.png"))
    assert pngs == ["attention_layer_0.png", "attention_layer_1.png"]
    assert "head entropies" in capsys.readouterr().out


def test_transformer_trains_on_paired_source_target_text(pipeline_run, tmp_path):
    """The original Transformer's own task: paired text (here: copy a word list, reversed)."""
    import json
    import random

    rng = random.Random(0)
    words = "river town north south old new market bridge church school road hill lake field".split()
    lines = []
    for _ in range(600):
        src = [rng.choice(words) for _ in range(rng.randint(3, 8))]
        lines.append(json.dumps({"source": " ".join(src), "target": " ".join(reversed(src))}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    result = train(
        pipeline_run["tokens_manifest"],
        tmp_path / "seq2seq",
        "model.family=transformer",
        f"train.pairs={tmp_path / 'pairs.jsonl'}",
        "train.target_length=24",
        "model.block_size=24",
    )
    assert result["model"]["objective"] == "seq2seq"
    assert set(result["val_metrics"]) == {"loss", "accuracy"}
    assert result["history"][-1]["train/loss"] < result["history"][0]["train/loss"] - 1.0
    assert result["val_metrics"]["accuracy"] > 0.3


def test_zero3_with_cpu_offload_bf16_and_activation_checkpointing_trains_and_registers(pipeline_run, tmp_path):
    """The memory-saving settings together, for real under DeepSpeed on CPU; then what MLflow holds."""
    from mlflow.tracking import MlflowClient

    result = train(
        pipeline_run["tokens_manifest"],
        tmp_path / "offload",
        "train.zero_stage=3",
        "train.offload_optimizer=true",
        "train.offload_params=true",
        "train.precision=bf16",
        "train.activation_checkpointing=true",
        "train.max_steps=20",
        "train.eval_every=10",
    )
    history = result["history"]
    assert all(h["train/loss"] == h["train/loss"] for h in history)  # no NaN
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    ds = __import__("json").loads((tmp_path / "offload" / "deepspeed_config.json").read_text())
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["offload_param"]["device"] == "cpu"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert {"train/grad_norm", "train/peak_rss_gib", "train/tokens_per_s", "val/loss"} <= set(run.data.metrics)
    assert "train/mfu" not in run.data.metrics  # CPU: not applicable, never a made-up number
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # step 10 and the end
    assert any(k.startswith("system/node_0/") for k in run.data.metrics)  # one node: node rank 0
    tokens = read_manifest(pipeline_run["tokens_manifest"], stage="tokenize")
    assert run.data.tags["tokenmill.tokens_sha256"] == __import__(
        "tokenmill.core.manifest", fromlist=["x"]
    ).sha256_file(pipeline_run["tokens_manifest"])
    assert run.data.tags["tokenmill.data_manifest"] == tokens["data_manifest"]["path"]
    assert "plots/loss_curve.png" in {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    registered = result["registered_model"]
    assert registered["artifact"] == "model" and registered["format"] == "mlflow"
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.run_id == run.info.run_id
    assert version.source.endswith("/model")
    model_files = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in model_files
    # a second run registers the next version of the same model
    again = train(pipeline_run["tokens_manifest"], tmp_path / "again", "train.max_steps=5")
    assert again["registered_model"]["name"] == registered["name"]
    assert int(again["registered_model"]["version"]) == int(registered["version"]) + 1
