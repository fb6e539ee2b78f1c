"""The command line: config errors are reported, not raised; `config` prints the resolved values."""

import yaml

from tokenmill.cli import build_parser, main


def test_unknown_override_is_a_clear_error(capsys):
    assert main(["config", "--set", "train.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "train.'max_step'" in err or "max_step" in err
    assert "max_steps" in err


def test_bad_values_exit_2_with_one_line_and_no_traceback(capsys, tmp_path):
    assert main(["config", "--set", "train.precision=fp8"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "tokenmill: config error: train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'\n"
    assert main(["train", "--dry-run", "--set", "train.micro_batch_size=0", "--set", f"run.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err == "tokenmill: config error: train.micro_batch_size must be > 0, got 0\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tokenmill: config error: {bad}:3:1: not valid YAML: ") and err.count("\n") == 1


def test_config_warns_about_what_only_running_needs(capsys, monkeypatch, tmp_path):
    """Printing a config needs no input and no GPU: a missing data.input or fp16 without a GPU is a warning
    there; a command that runs them stops with exit 2."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = ["--set", f"data.input={tmp_path}/nothing/*.warc.gz", "--set", "train.precision=fp16"]
    assert main(["config", *missing]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["train"]["precision"] == "fp16"
    warnings = out.err.splitlines()
    assert len(warnings) == 2 and all(w.startswith("tokenmill: warning: ") for w in warnings)
    assert "fp16 needs a GPU" in out.err and "matches no input files" in out.err
    assert main(["data", *missing[:2], "--set", f"run.output_dir={tmp_path}"]) == 2
    assert "matches no input files" in capsys.readouterr().err
    assert main(["run", *missing[2:], "--set", f"run.output_dir={tmp_path}"]) == 2
    assert "config error: train.precision=fp16 needs a GPU" in capsys.readouterr().err


def test_config_prints_resolved_values(capsys):
    assert main(["config", "--config", "conf/tiny.yaml", "--set", "train.max_steps=7"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["max_steps"] == 7
    assert resolved["model"]["n_layer"] == 2  # from the file
    assert resolved["train"]["weight_decay"] == 0.1  # built-in default


def test_run_help_mentions_precedence():
    sub = build_parser()._subparsers._group_actions[0].choices["run"]
    assert "--set overrides" in sub.format_help()


def test_summary_says_whether_the_baseline_was_beaten_and_where_to_look():
    from tokenmill.cli import summary

    result = {
        "val_loss": 5.5,
        "token_loss": 5.0,
        "unigram_baseline_loss": 7.0,
        "run_dir": "/r",
        "mlflow_run_id": "abc",
        "tracking_uri": "sqlite:////r/mlflow.db",
        "family": "bert",
        "val_metrics": {"loss": 5.5, "mlm_accuracy": 0.25},
        "mlflow_run_url": "http://127.0.0.1:5000/#/experiments/1/runs/abc",
    }
    text = summary(result)
    assert "beats the unigram baseline 7.0000" in text and "abc" in text and "sqlite:////r/mlflow.db" in text
    assert "mlm_accuracy 0.2500" in text and "bert" in text
    assert "does NOT beat" in summary({**result, "token_loss": 8.0})
    assert "then open http://127.0.0.1:5000/#/experiments/1/runs/abc" in text  # the run's page, not the list
    served = summary({**result, "tracking_uri": "http://mlflow:5000", "mlflow_run_url": "http://mlflow:5000/#/x"})
    assert "MLflow run        http://mlflow:5000/#/x" in served and "mlflow ui" not in served


def test_run_url_is_the_page_of_the_run(tmp_path):
    from tokenmill.core import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = tracking.open_run(uri, "exp", "r1")
    url = tracking.run_url(uri, run_id)
    assert url.startswith(tracking.LOCAL_UI + "/#/experiments/")
    assert url.endswith(f"/runs/{run_id}?workflowType=machine_learning")  # MLflow 3's model-training view
    assert tracking.ui_command(uri) == f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    assert tracking.ui_command("http://mlflow:5000") is None


def test_models_lists_flavours_with_counts_from_the_code(capsys):
    from tokenmill.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0] + "/" + line.split()[1]: line.split()
        for line in out.splitlines()[1:]
        if line.strip() and not line.startswith(("objectives", "Use"))
    }
    assert rows["gpt2-small/gpt"][7:9] == ["50257", "124.4M"]
    assert "110.1M" in rows["bert-base/bert"] and "60.5M" in rows["t5-small/t5"]
    assert {"debug/gpt", "debug/bert", "debug/t5", "debug/transformer"} <= set(rows)
    assert main(["models", "--family", "t5"]) == 0
    assert "gpt2-small" not in capsys.readouterr().out


def test_model_errors_stop_before_any_work(capsys, tmp_path):
    from tokenmill.cli import main

    assert main(["train", "--set", "model.flavor=gpt2-smol", "--set", f"run.output_dir={tmp_path}"]) == 2
    assert "unknown model.flavor" in capsys.readouterr().err
    assert main(["run", "--set", "model.n_head=3", "--set", f"run.output_dir={tmp_path}"]) == 2
    assert "not divisible by n_head 3" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "--prompt", "x"]) == 2
    assert "neither a tokenmill model folder" in capsys.readouterr().err
