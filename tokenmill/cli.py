"""``tokenmill``: the command line.

tokenmill run [--config FILE] [--set section.key=value ...]   run the pipeline flow
tokenmill data [--config FILE] [--set ...] [--out DIR]         run the data job alone (no Prefect, no MLflow)
tokenmill train [--config FILE] [--set ...] [--tokens M]       train on existing token shards (DeepSpeed, MLflow)
tokenmill config [--config FILE] [--set ...]                   print the resolved configuration
tokenmill models [--family F]                                  list the model flavours with parameter counts
tokenmill plan --model FLAVOUR --gpus N --zero S [--offload]   memory, FLOPs, token budget and time for a run
tokenmill export MODEL --out DIR                               write a Hugging Face folder for a trained model
tokenmill generate MODEL --prompt TEXT [...]                   sample from a GPT, T5 or Transformer
tokenmill attention MODEL --text TEXT --out DIR                save per-layer attention heatmaps
tokenmill up [--host H] [--prefect-port N] [--mlflow-port N]   start local Prefect and MLflow servers
tokenmill down                                                 stop them
tokenmill status                                               are they running? (exit 0 yes, 3 no)
tokenmill serve [DEPLOYMENT ...] [--list]                      serve prefect.yaml's deployments
tokenmill bakeoff [--config FILE] [--set ...] [--families ...]  GPT vs BERT vs T5 on the same data
tokenmill ablation [--config FILE] [--set ...] [--recipes ...]  does the cleaning pay? one model per data recipe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenmill.core.env import prepare_environment


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", metavar="FILE", help="YAML file over the built-in defaults (see conf/demo.yaml for every key)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key after the file, e.g. --set train.max_steps=50 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenmill",
        description="Pretrain a foundation model from raw web text: Spark cleans the crawl, DeepSpeed trains, "
        "Prefect orchestrates, MLflow tracks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stage_commands(sub)
    _add_model_commands(sub)
    _add_service_commands(sub)
    _add_bakeoff_command(sub)
    _add_ablation_command(sub)
    return parser


def _add_stage_commands(sub) -> None:
    """The pipeline and its stages: run, data, train, config."""
    run = sub.add_parser(
        "run",
        help="run the pipeline flow (data → tokenize → train → evaluate, in MLflow)",
        description="Run the pipeline Prefect flow: Spark data job, BPE tokenizer, "
        "DeepSpeed training of model.family, evaluation from the saved weights, "
        "all tracked in MLflow. A rerun skips the stages whose inputs, config and "
        "code did not change. Uses the `tokenmill up` servers when they run. Config "
        "precedence: defaults < --config file < --set overrides.",
    )
    _add_config_args(run)
    data = sub.add_parser(
        "data",
        help="run only the Spark data job and print its funnel",
        description="Run the Spark data job (read, steps, shards, manifest) without Prefect or "
        "MLflow. Output goes to --out, default <run.output_dir>/<run.name>/data.",
    )
    _add_config_args(data)
    data.add_argument("--out", metavar="DIR", help="output folder for shards and manifest.json")
    train = sub.add_parser(
        "train",
        help="train a model on existing token shards",
        description="Train model.family (gpt, bert, t5, transformer) on the token shards of a "
        "tokenize manifest with DeepSpeed on train.nproc processes, tracked in MLflow. "
        "Writes a model folder to --out, default <run.output_dir>/<run.name>/train. "
        "SIGTERM or Ctrl-C stops it at the next step with a checkpoint (exit 143 / 130, MLflow run KILLED); "
        "the same command resumes. Several nodes with torchrun: run the same command on each, with "
        "train.nnodes and train.rdzv_endpoint, --out on storage they share.",
    )
    _add_config_args(train)
    train.add_argument(
        "--tokens",
        metavar="MANIFEST",
        help="tokenize manifest.json (default <run.output_dir>/<run.name>/tokens/manifest.json)",
    )
    train.add_argument("--out", metavar="DIR", help="output folder for the model, samples and manifest.json")
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="print the launch command (torchrun or deepspeed) and the DeepSpeed config, start nothing",
    )
    show = sub.add_parser("config", help="print the resolved configuration and exit")
    _add_config_args(show)


def _add_model_commands(sub) -> None:
    """What to do with a model: models, plan, export, generate, attention."""
    models = sub.add_parser(
        "models",
        help="list model flavours with parameter counts computed from the code",
        description="Every named flavour (model.flavor) with its family, shape and parameter "
        "count at its published vocabulary, counted from the model code.",
    )
    from tokenmill.training.families import FAMILIES

    models.add_argument("--family", choices=list(FAMILIES), help="only this family")

    from tokenmill.training.planner import add_arguments as add_plan_arguments

    plan = sub.add_parser(
        "plan",
        help="plan a run: parameters, FLOPs, memory per GPU per ZeRO stage, budget, time",
        description="The course's 'choosing the right options': parameters, FLOPs per token, "
        "memory per GPU for model states under each ZeRO stage and activations at "
        "the micro-batch, the compute-optimal token budget (~20 tokens/parameter) "
        "and the wall time at an assumed MFU.",
    )
    add_plan_arguments(plan)

    export = sub.add_parser(
        "export",
        help="write a trained model as a Hugging Face folder",
        description="Convert a tokenmill model folder (a run's train/ folder) into a folder that "
        "transformers loads without custom code: GPT → GPT2LMHeadModel, BERT → "
        "BertForPreTraining, T5 → T5ForConditionalGeneration, Transformer → "
        "MarianMTModel, with a fast tokenizer, as safetensors.",
    )
    export.add_argument("model", metavar="MODEL", help="a tokenmill model folder (holds model.json)")
    export.add_argument("--out", metavar="DIR", required=True, help="output folder")

    gen = sub.add_parser(
        "generate",
        help="sample text from a GPT, T5 or Transformer model",
        description="Decode with a key/value cache. GPT continues the prompt; the encoder-decoders "
        "read it (write <extra_id_0> where a span should be filled) and write the output.",
    )
    gen.add_argument("model", metavar="MODEL", help="a tokenmill model folder or a Hugging Face folder")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    gen.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest tokens (0: all)")
    gen.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: the smallest set holding p of the mass"
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--num-samples", type=int, default=1)
    gen.add_argument("--no-cache", action="store_true", help="recompute every position at every step (slower)")

    att = sub.add_parser(
        "attention",
        help="save per-layer attention heatmaps for a text",
        description="Run the model on --text and save one PNG per layer (every head, with its "
        "entropy: near 0 is a collapsed head, near log(T) a uniform one).",
    )
    att.add_argument("model", metavar="MODEL", help="a tokenmill model folder or a Hugging Face folder")
    att.add_argument("--text", required=True)
    att.add_argument("--out", metavar="DIR", required=True)


def _add_service_commands(sub) -> None:
    """The local servers and the deployments: up, down, status, serve."""
    where = "State, databases, artifacts and logs live in $TOKENMILL_HOME/services, default ./.tokenmill/services."
    svc_up = sub.add_parser(
        "up",
        help="start a local Prefect server and MLflow tracking server in the background",
        description="Start `prefect server start` and `mlflow server` (SQLite, detached) and "
        "wait until both are healthy. tokenmill commands run with the same home "
        "then use them instead of the embedded Prefect API and the SQLite "
        "tracking file; other shells can export the printed variables. Running "
        "servers are reused, not started twice. " + where,
    )
    svc_up.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; the servers have no authentication)",
    )
    svc_up.add_argument("--prefect-port", type=int, default=4200, metavar="N", help="Prefect port (default 4200)")
    svc_up.add_argument("--mlflow-port", type=int, default=5000, metavar="N", help="MLflow port (default 5000)")
    svc_up.add_argument(
        "--timeout", type=float, default=180, metavar="S", help="seconds to wait for both to be healthy (default 180)"
    )
    sub.add_parser(
        "down",
        help="stop the servers started by `tokenmill up`",
        description="Stop exactly the processes `tokenmill up` recorded (with their children): "
        "SIGTERM, then SIGKILL after a grace period. Data and logs are kept. " + where,
    )
    sub.add_parser(
        "status",
        help="show whether the `tokenmill up` servers are running",
        description="Print each server's state (running, unhealthy, stopped), URL and pid. Exit "
        "status 0 when both are running, 3 otherwise. " + where,
    )

    serve = sub.add_parser(
        "serve",
        help="serve the deployments of prefect.yaml (schedules included)",
        description="Serve the deployments defined in prefect.yaml (named <flow>/<variant>, "
        "e.g. data/nightly, pipeline/demo, train/on-demand) from this process "
        "until interrupted: their schedules run, and runs triggered from the "
        "Prefect UI or `prefect deployment run` start here as subprocesses, in the "
        "repository folder. Needs a Prefect server: `tokenmill up`, or "
        "PREFECT_API_URL. (The same deployments go to a work pool with "
        "`prefect deploy --all` and `prefect worker start --pool tokenmill-process`.)",
    )
    serve.add_argument(
        "deployments",
        nargs="*",
        metavar="DEPLOYMENT",
        help="only these (shell patterns, e.g. 'pipeline/*'); default: all",
    )
    serve.add_argument("--no-schedules", action="store_true", help="serve for on-demand runs only")
    serve.add_argument("--limit", type=int, metavar="N", help="at most N flow runs at once")
    serve.add_argument("--list", action="store_true", help="list the deployments and exit (no server needed)")


def _add_bakeoff_command(sub) -> None:
    """The bake-off of model families."""
    bake = sub.add_parser(
        "bakeoff",
        help="train GPT, BERT and T5 of comparable size on the same data and compare",
        description="Run the bakeoff flow: the data and tokenize stages (cached), then each "
        "family with the width, heads and context of model.* (an encoder-decoder "
        "gets the depth closest in parameters), the same global batch and the same "
        "number of input tokens, as child runs of one MLflow parent run. Prints the "
        "comparison; the plot and table go to the Prefect UI and the parent run.",
    )
    _add_config_args(bake)
    bake.add_argument("--families", default="gpt,bert,t5", help="comma-separated (default gpt,bert,t5)")
    bake.add_argument(
        "--token-budget",
        type=int,
        metavar="N",
        help="input tokens per family (default train.max_steps x global batch x context)",
    )


def _add_ablation_command(sub) -> None:
    """The data ablation."""
    abl = sub.add_parser(
        "ablation",
        help="train the same model on each data recipe and compare them on held-out text",
        description="Run the ablation flow: per recipe of the recipes file (a data.steps list plus --set "
        "overrides) the data stage (cached), one tokenizer trained on the union of their text, then the same "
        "model, seed and number of training tokens per recipe, each scored on the same held-out sets (a shipped "
        "clean set and every recipe's validation documents, decontaminated against every recipe's training "
        "text). The first recipe also trains with noise_seeds more seeds. Prints the comparison; the table and "
        "chart go to the Prefect UI and the parent MLflow run. docs/ablation.md says how to read it.",
    )
    _add_config_args(abl)
    abl.add_argument(
        "--recipes-file", metavar="FILE", help="the recipes (default conf/ablation.yaml: raw, filtered, filtered+dedup)"
    )
    abl.add_argument("--recipes", help="comma-separated recipe names to run, in this order (default: all in the file)")


def ablation_command(args) -> int:
    from tokenmill.core.config import ConfigError
    from tokenmill.flows.ablation import ablation_flow, load_plan

    only = [r.strip() for r in args.recipes.split(",") if r.strip()] if args.recipes else None
    try:
        load_plan(args.recipes_file, only)  # a bad recipes file fails before any work
    except ConfigError as e:
        print(f"tokenmill: config error: {e}", file=sys.stderr)
        return 2
    result = ablation_flow(
        config_path=args.config, overrides=args.overrides, recipes_path=args.recipes_file, recipes=only
    )
    sets = [k for k in result["rows"][0] if k.startswith(("clean", "val-")) and not k.endswith("_spread")]
    width = {s: max(17, len(s)) + 2 for s in sets}
    print("\n" + f"{'recipe':<18}{'tokens_seen':>12}" + "".join(f"{s:>{width[s]}}" for s in sets) + f"{'seeds':>7}")
    for row in result["rows"]:
        cells = "".join(
            f"{row[s]:.4f} ±{row[s + '_spread']:.3f}".rjust(width[s])
            if row[f"{s}_spread"] is not None
            else f"{row[s]!s:>{width[s]}}"
            for s in sets
        )
        print(f"{row['recipe']:<18}{row['tokens_seen']:>12}{cells}{row['seeds']:>7}")
    print(
        f"\ntokenmill: ablation finished (held-out token loss, nats; ± the spread over seeds).\n"
        f"  chart             {result['chart']}\n"
        f"  held-out sets     {result['heldout_manifest']}\n"
        f"  MLflow parent run {result['parent_run_id']} at {result['tracking_uri']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment()
    tools = {
        "models": models_command,
        "export": export_command,
        "generate": generate_command,
        "attention": attention_command,
        "plan": plan_command,
        "up": up_command,
        "down": down_command,
        "status": status_command,
        "serve": serve_command,
    }
    if args.command in tools:
        try:
            return tools[args.command](args)
        except (FileNotFoundError, ValueError) as e:
            print(f"tokenmill: {e}", file=sys.stderr)
            return 2
    from tokenmill.core.config import ConfigError
    from tokenmill.resolve import machine_problems, resolve_config

    # `config` and `train --dry-run` start nothing here: what this machine or its inputs lack is a warning.
    only_show = args.command == "config" or getattr(args, "dry_run", False)
    try:
        cfg = resolve_config(args.config, args.overrides, this_machine=not only_show)
        if args.command in ("run", "data", "bakeoff", "ablation"):
            check_data_config(cfg)
        if args.command in ("run", "train"):
            check_model_config(cfg)
    except (ConfigError, OSError, ValueError) as e:  # OSError: FileNotFoundError, an input store that cannot be listed
        print(f"tokenmill: {'config error: ' if isinstance(e, ConfigError) else ''}{e}", file=sys.stderr)
        return 2
    if only_show:
        warnings = machine_problems(cfg)
        if args.command == "config":
            try:
                check_data_config(cfg)
            except (OSError, ValueError) as e:
                warnings.append(str(e))
        for warning in warnings:
            print(f"tokenmill: warning: {warning}", file=sys.stderr)
    if args.command == "config":
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0

    if args.command == "data":
        import logging

        from tokenmill.spark_jobs.clean import run_clean_job

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        out = args.out or cfg.run_dir / "data"
        manifest = run_clean_job(cfg.data, out)
        print(funnel_table(manifest["funnel"]))
        print(f"manifest: {Path(out).resolve() / 'manifest.json'}")
        return 0

    if args.command == "train":
        return train_command(cfg, args)
    if args.command == "bakeoff":
        return bakeoff_command(args)
    if args.command == "ablation":
        return ablation_command(args)

    from tokenmill.flows.pipeline import pipeline_flow

    result = pipeline_flow(config_path=args.config, overrides=args.overrides)
    from tokenmill.core import tracking
    from tokenmill.core.manifest import read_manifest

    print("\n" + funnel_table(read_manifest(result["data_manifest"], stage="data")["funnel"]))
    print(summary({**result, "mlflow_run_url": tracking.run_url(result["tracking_uri"], result["mlflow_run_id"])}))
    return 0


def serve_command(args) -> int:
    from tokenmill.flows.deployments import deployment_entries, select, serve

    entries = select(deployment_entries(), args.deployments)
    if args.list:
        print(f"{'deployment':<22}{'entrypoint':<38}{'schedule':<22}description")
        for e in entries:
            cron = (
                ", ".join(f"{s['cron']}{'' if s.get('active', True) else ' (off)'}" for s in e.get("schedules") or [])
                or "on demand"
            )
            print(f"{e['full_name']:<22}{e['entrypoint']:<38}{cron:<22}{e.get('description', '')[:70]}")
        return 0
    try:
        serve(args.deployments, with_schedules=not args.no_schedules, limit=args.limit)
    except RuntimeError as e:
        print(f"tokenmill: {e}", file=sys.stderr)
        return 2
    return 0


def bakeoff_command(args) -> int:
    from tokenmill.flows.bakeoff import bakeoff_flow

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    result = bakeoff_flow(
        config_path=args.config, overrides=args.overrides, families=families, token_budget=args.token_budget
    )
    cols = [
        ("family", 13),
        ("objective", 17),
        ("parameters", 12),
        ("input_tokens", 14),
        ("wall_s", 9),
        ("tokens_per_s", 14),
        ("token_loss", 12),
        ("unigram_baseline", 18),
        ("token_accuracy", 16),
        ("unigram_accuracy", 18),
    ]
    print("\n" + "".join(f"{name:<{w}}" for name, w in cols))
    for row in result["rows"]:
        print("".join(f"{row[name]!s:<{w}}" for name, w in cols))
    print(
        f"\ntokenmill: bake-off finished.\n  plot              {result['chart']}\n"
        f"  MLflow parent run {result['parent_run_id']} at {result['tracking_uri']}"
    )
    return 0


def check_data_config(cfg) -> None:
    """Fail before any service starts: the inputs exist, every data step accepts its options, and HTML
    inputs have the ``extract`` step (``check_extract_for_html``)."""
    from tokenmill.spark_jobs.clean import build_steps, check_extract_for_html
    from tokenmill.spark_jobs.readers import expand_inputs

    inputs = expand_inputs(cfg.data.input, cfg.data.format)
    try:
        build_steps(cfg.data)
    except TypeError as e:
        raise ValueError(f"data step options: {e}") from e
    check_extract_for_html(inputs, cfg.data.steps)


def check_model_config(cfg) -> None:
    """Fail before any work starts: the model section names a known family/flavour with valid keys."""
    from tokenmill.training.models import architecture, build_model

    arch = architecture(cfg.model)
    with __import__("torch").device("meta"):
        build_model(arch)  # the family's own checks (positions, activations, divisibility)


def train_command(cfg, args) -> int:
    import logging

    from tokenmill.core.manifest import read_manifest
    from tokenmill.training import launch
    from tokenmill.training.stage import train_stage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tokens = Path(args.tokens or cfg.run_dir / "tokens" / "manifest.json").resolve()
    if not tokens.is_file():
        print(
            f"tokenmill: no tokenize manifest at {tokens}; run `tokenmill run` first or pass --tokens", file=sys.stderr
        )
        return 2
    read_manifest(tokens, stage="tokenize")
    out = Path(args.out or cfg.run_dir / "train").resolve()
    if args.dry_run:
        import json

        from tokenmill.training.distributed import deepspeed_config

        world = cfg.train.nproc * cfg.train.nnodes
        print(" ".join(launch.command(cfg.train, out / "config.yaml", tokens, out, "<mlflow run id>", cfg.run.name)))
        print(json.dumps(deepspeed_config(cfg.train, world, cfg.train.deepspeed_config), indent=2))
        return 0
    try:
        trained = train_stage(cfg, tokens, out, echo=print)
    except launch.Stopped as e:
        print(f"tokenmill: training {e}; it wrote a checkpoint: run the same command to resume", file=sys.stderr)
        return e.code  # 143 for SIGTERM, 130 for SIGINT, as the shell reports a process the signal ended
    except BaseException as e:
        print(f"tokenmill: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    run_id = trained["mlflow_run_id"]
    result = read_manifest(out / "manifest.json", stage="train")
    print(
        f"\ntokenmill: trained {result['model']['family']} ({result['model']['objective']}), validation "
        + ", ".join(f"{k} {v:.4f}" for k, v in result["val_metrics"].items())
        + f"\n  model folder  {out}\n  MLflow run    {run_id} at {cfg.tracking_uri}"
    )
    return 0


def models_command(args) -> int:
    from tokenmill.core.config import ModelConfig
    from tokenmill.training.families import FAMILIES
    from tokenmill.training.models import architecture, count_parameters
    from tokenmill.training.models.flavors import FLAVORS

    rows = []
    for name, flavor in FLAVORS.items():
        for family in [flavor.family] if flavor.family else list(FAMILIES):
            if args.family and family != args.family:
                continue
            arch = architecture(ModelConfig(family=family, flavor=name))
            layers = (
                f"{arch.n_layer}+{arch.n_decoder_layer or arch.n_layer}"
                if FAMILIES[family].encoder_decoder
                else arch.n_layer
            )
            rows.append(
                (
                    name,
                    family,
                    str(layers),
                    arch.n_embd,
                    arch.n_head,
                    arch.d_ff or 4 * arch.n_embd,
                    arch.block_size,
                    arch.vocab_size,
                    count_parameters(arch),
                    flavor.source,
                )
            )
    print(
        f"{'flavor':<18}{'family':<13}{'layers':>7}{'d_model':>9}{'heads':>7}{'d_ff':>7}{'context':>9}"
        f"{'vocab':>8}{'params':>10}  source"
    )
    for r in rows:
        print(
            f"{r[0]:<18}{r[1]:<13}{r[2]:>7}{r[3]:>9}{r[4]:>7}{r[5]:>7}{r[6]:>9}{r[7]:>8}{_millions(r[8]):>10}  {r[9]}"
        )
    print(
        "\nobjectives: "
        + "; ".join(f"{f}: {spec.objective_description}" for f, spec in FAMILIES.items())
        + ".\nUse one with --set model.flavor=NAME; training uses the run tokenizer's vocabulary."
    )
    return 0


def _millions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def plan_command(args) -> int:
    from tokenmill.training.planner import run

    return run(args)


def up_command(args) -> int:
    from tokenmill import services

    home = services.services_home()
    try:
        urls = services.up(
            home, host=args.host, prefect_port=args.prefect_port, mlflow_port=args.mlflow_port, timeout=args.timeout
        )
    except services.ServiceError as e:
        print(f"tokenmill: {e}", file=sys.stderr)
        return 1
    print(
        f"\ntokenmill: services are up (state in {home / 'services'}); stop them with `tokenmill down`.\n"
        + services.describe(urls)
    )
    return 0


def down_command(args) -> int:
    from tokenmill import services

    home = services.services_home()
    if not services.down(home):
        print(f"tokenmill: no services were running (home {home})")
    return 0


def status_command(args) -> int:
    from tokenmill import services

    home = services.services_home()
    states = services.status(home)
    for name, st in states.items():
        where = f"  {st['url']}  pid {st['pid']}" if st["pid"] else ""
        print(f"{name:<8} {st['state']:<10}{where}")
    if all(st["state"] == "running" for st in states.values()):
        urls = {
            "prefect_ui": states["prefect"]["url"],
            "prefect_api": states["prefect"]["api_url"],
            "mlflow": states["mlflow"]["url"],
        }
        print("\n" + services.describe(urls))
        return 0
    print(f"\nstart them with `tokenmill up` (home {home})")
    return 3


def export_command(args) -> int:
    from tokenmill.core.manifest import read_manifest
    from tokenmill.training.hf import export
    from tokenmill.training.weights import load_model

    model, tokenizer = load_model(args.model)
    trained = Path(args.model) / "manifest.json"  # a training run's folder: its figures go in the model card
    facts = read_manifest(trained, stage="train").get("model_card") if trained.is_file() else None
    out = export(model, tokenizer, args.out, facts)
    print(f"tokenmill: wrote {out} (load it with transformers' from_pretrained; no custom code needed)")
    return 0


def generate_command(args) -> int:
    import torch
    from tokenizers import Tokenizer

    from tokenmill.core.tokenizer import special_ids
    from tokenmill.training.families import FAMILIES, spec_of
    from tokenmill.training.weights import load_model

    model, tok_path = load_model(args.model)
    spec = spec_of(model.cfg)
    generate = spec.generator()
    if generate is None:
        *others, last = [name for name, s in FAMILIES.items() if s.generate]
        raise ValueError(
            f"{spec.title} is an encoder: it fills [MASK] tokens but does not generate; use a "
            f"{', '.join(others)} or {last} model"
        )
    tok = Tokenizer.from_file(str(tok_path))
    tok.encode_special_tokens = False  # let the user write <extra_id_0> and <|endoftext|>
    specials = special_ids(tok)
    ids = tok.encode(args.prompt, add_special_tokens=False).ids
    gen = torch.Generator().manual_seed(args.seed)
    top_k = args.top_k or None
    for i in range(args.num_samples):
        out = generate(
            model,
            ids,
            specials,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=top_k,
            top_p=args.top_p,
            generator=gen,
            use_cache=not args.no_cache,
        )
        text = tok.decode(out, skip_special_tokens=False)
        print(("" if args.num_samples == 1 else f"--- sample {i + 1}\n") + text)
    return 0


def attention_command(args) -> int:
    from tokenizers import Tokenizer

    from tokenmill.core.tokenizer import special_ids
    from tokenmill.training.attention import attention_maps, head_entropy, save_attention_pngs, token_labels
    from tokenmill.training.families import spec_of
    from tokenmill.training.weights import load_model

    model, tok_path = load_model(args.model)
    tok = Tokenizer.from_file(str(tok_path))
    specials = special_ids(tok)
    ids = spec_of(model.cfg).attention_framing.frame(tok.encode(args.text).ids, specials)
    if not ids:
        raise ValueError("--text encodes to no tokens")
    ids = ids[: model.cfg.block_size]
    maps = attention_maps(model, ids)
    files = save_attention_pngs(maps, token_labels(tok, ids), args.out)
    for (name, weights), path in zip(maps.items(), files):
        ent = " ".join(f"{e:.2f}" for e in head_entropy(weights).tolist())
        print(f"{name:<12} head entropies [{ent}]  {path}")
    return 0


def funnel_table(funnel: list[dict]) -> str:
    """The data funnel as a fixed-width text table."""
    lines = [f"{'stage':<20}{'in':>10}{'dropped':>10}{'quarantined':>13}{'out':>10}"]
    lines += [
        f"{r['stage']:<20}{r['in']:>10,}{r['dropped']:>10,}{r['quarantined']:>13,}{r['out']:>10,}" for r in funnel
    ]
    return "\n".join(lines)


def summary(result: dict) -> str:
    """What the user reads at the end of a run: the losses and where to look (``mlflow_run_url``: the run's page)."""
    from tokenmill.core.tracking import ui_command

    beat = "beats" if result["token_loss"] < result["unigram_baseline_loss"] else "does NOT beat"
    command = ui_command(result["tracking_uri"])
    if command:  # a local store: its UI runs on demand
        command = command.replace("mlflow ", f"{Path(sys.executable).with_name('mlflow')} ", 1)
        ui = f"{command}\n                    then open {result['mlflow_run_url']}"
    else:
        ui = result["mlflow_run_url"]
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["val_metrics"].items())
    baseline = result["unigram_baseline_loss"]
    return f"""
tokenmill: pipeline finished.
  model             {result["family"]}
  validation        {metrics}
  token loss        {result["token_loss"]:.4f} nats/token ({beat} the unigram baseline {baseline:.4f})
  output folder     {result["run_dir"]}
  MLflow run id     {result["mlflow_run_id"]}
  MLflow run        {ui}"""


if __name__ == "__main__":
    sys.exit(main())
