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

    result = {"val_loss": 5.0, "unigram_baseline_loss": 7.0, "run_dir": "/r", "mlflow_run_id": "abc",
              "tracking_uri": "sqlite:////r/mlflow.db"}
    text = summary(result)
    assert "beats the unigram baseline 7.0000" in text and "abc" in text and "sqlite:////r/mlflow.db" in text
    assert "does NOT beat" in summary({**result, "val_loss": 8.0})
    assert "http://127.0.0.1:5000/#/experiments" in summary({**result, "tracking_uri": "http://127.0.0.1:5000"})
