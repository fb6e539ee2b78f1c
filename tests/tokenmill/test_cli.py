"""The command line: config errors are reported, not raised; `config` prints the resolved values."""

import yaml

from tokenmill.cli import build_parser, main


def test_unknown_override_is_a_clear_error(capsys):
    assert main(["config", "--set", "train.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "train.'max_step'" in err or "max_step" in err
    assert "max_steps" in err


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
    }
    text = summary(result)
    assert "beats the unigram baseline 7.0000" in text and "abc" in text and "sqlite:////r/mlflow.db" in text
    assert "mlm_accuracy 0.2500" in text and "bert" in text
    assert "does NOT beat" in summary({**result, "token_loss": 8.0})
    assert "http://127.0.0.1:5000/#/experiments" in summary({**result, "tracking_uri": "http://127.0.0.1:5000"})


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
