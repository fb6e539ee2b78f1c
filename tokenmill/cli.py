"""``tokenmill``: the command line.

    tokenmill run [--config FILE] [--set section.key=value ...]   run the pretrain-pipeline flow
    tokenmill data [--config FILE] [--set ...] [--out DIR]         run the data job alone (no Prefect, no MLflow)
    tokenmill config [--config FILE] [--set ...]                   print the resolved configuration
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenmill.env import REPO_ROOT, prepare_environment


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="YAML file over the built-in defaults (see conf/demo.yaml for every key)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one key after the file, e.g. --set train.max_steps=50 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenmill",
        description="Pretrain a foundation model from raw web text: Spark cleans the crawl, DeepSpeed trains, "
                    "Prefect orchestrates, MLflow tracks.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pretrain-pipeline flow (data → tokenizer → training → MLflow)",
                         description="Run the pretrain-pipeline Prefect flow: Spark data job, BPE tokenizer, "
                                     "DeepSpeed GPT training and evaluation, all tracked in MLflow. Config "
                                     "precedence: defaults < --config file < --set overrides.")
    _add_config_args(run)
    data = sub.add_parser("data", help="run only the Spark data job and print its funnel",
                          description="Run the Spark data job (read, steps, shards, manifest) without Prefect or "
                                      "MLflow. Output goes to --out, default <run.output_dir>/<run.name>/data.")
    _add_config_args(data)
    data.add_argument("--out", metavar="DIR", help="output folder for shards and manifest.json")
    show = sub.add_parser("config", help="print the resolved configuration and exit")
    _add_config_args(show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment()
    from tokenmill.config import ConfigError, load_config, resolve_paths

    try:
        cfg = resolve_paths(load_config(args.config, args.overrides), REPO_ROOT)
        if args.command in ("run", "data"):
            check_data_config(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"tokenmill: {'config error: ' if isinstance(e, ConfigError) else ''}{e}", file=sys.stderr)
        return 2
    if args.command == "config":
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0

    if args.command == "data":
        import logging

        from spark_jobs.clean import run_clean_job

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        out = args.out or cfg.run_dir / "data"
        manifest = run_clean_job(cfg.data, out)
        print(funnel_table(manifest["funnel"]))
        print(f"manifest: {Path(out).resolve() / 'manifest.json'}")
        return 0

    from flows.pipeline import pretrain_pipeline

    result = pretrain_pipeline(config_path=args.config, overrides=args.overrides)
    from tokenmill.manifest import read_manifest

    print("\n" + funnel_table(read_manifest(result["data_manifest"], stage="data")["funnel"]))
    print(summary(result))
    return 0


def check_data_config(cfg) -> None:
    """Fail before any service starts: the inputs exist and every data step accepts its options."""
    from spark_jobs.clean import build_steps
    from spark_jobs.readers import expand_inputs

    expand_inputs(cfg.data.input, cfg.data.format)
    try:
        build_steps(cfg.data)
    except TypeError as e:
        raise ValueError(f"data step options: {e}") from e


def funnel_table(funnel: list[dict]) -> str:
    """The data funnel as a fixed-width text table."""
    lines = [f"{'stage':<20}{'in':>10}{'dropped':>10}{'quarantined':>13}{'out':>10}"]
    lines += [f"{r['stage']:<20}{r['in']:>10,}{r['dropped']:>10,}{r['quarantined']:>13,}{r['out']:>10,}"
              for r in funnel]
    return "\n".join(lines)


def summary(result: dict) -> str:
    """What the user reads at the end of a run: the losses and where to look."""
    beat = "beats" if result["val_loss"] < result["unigram_baseline_loss"] else "does NOT beat"
    uri = result["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        ui = f"open {uri}/#/experiments (run {result['mlflow_run_id']})"
    else:
        mlflow = Path(sys.executable).with_name("mlflow")
        ui = (f"{mlflow} ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
              "                    then open http://127.0.0.1:5000")
    return f"""
tokenmill: pipeline finished.
  validation loss   {result['val_loss']:.4f} nats/token ({beat} the unigram baseline {result['unigram_baseline_loss']:.4f})
  output folder     {result['run_dir']}
  MLflow run id     {result['mlflow_run_id']}
  MLflow UI         {ui}"""


if __name__ == "__main__":
    sys.exit(main())
