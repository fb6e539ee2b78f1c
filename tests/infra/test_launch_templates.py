"""The multi-node launch templates and the GPU check scripts: they parse, they launch what
``tokenmill.training.train`` expects, and the commands infra/deepspeed/README.md and docs/training.md show
start what they say and use tokenmill config keys.

Nothing here needs Slurm, ssh, several nodes or a GPU: Slurm's ``scontrol``/``srun`` are stand-ins
that record what they are asked, and the GPU check runs in its ``--dry-run`` and ``--cpu-smoke`` modes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tokenmill.core.config import ConfigError, load_config
from tokenmill.core.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "infra" / "slurm" / "train.sbatch"
HOSTFILE = REPO / "infra" / "deepspeed" / "hostfile.example"
README = REPO / "infra" / "deepspeed" / "README.md"
LOCAL_SSH = REPO / "infra" / "deepspeed" / "local-ssh.sh"
COMMON = REPO / "infra" / "lib" / "common.sh"  # sourced by local-ssh.sh and infra/slurm/local-cluster.sh
LOCAL_HOSTFILE = "/tmp/tokenmill-ssh/hostfile"  # what local-ssh.sh up writes without TOKENMILL_SSH_DIR
GPU_CHECK = REPO / "bench" / "gpu_check.sh"
WHEELHOUSE = REPO / "bench" / "wheelhouse.sh"

# Long options of sbatch(1) a template may reasonably use.
SBATCH_OPTIONS = {
    "account",
    "array",
    "constraint",
    "cpus-per-gpu",
    "cpus-per-task",
    "dependency",
    "error",
    "exclusive",
    "gpus",
    "gpus-per-node",
    "gpus-per-task",
    "gres",
    "job-name",
    "mail-type",
    "mail-user",
    "mem",
    "mem-per-cpu",
    "mem-per-gpu",
    "nodes",
    "ntasks",
    "ntasks-per-node",
    "output",
    "partition",
    "qos",
    "requeue",
    "reservation",
    "signal",
    "time",
}
SET_ARG = re.compile(r"--set[ =]+\"?([A-Za-z_][\w]*(?:\.[\w]+)+)=([^\s\"\\]*)")


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


@pytest.mark.parametrize("script", [SBATCH, GPU_CHECK, WHEELHOUSE, LOCAL_SSH], ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    result = run(["bash", "-n", str(script)])
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


def test_apt_install_tells_a_non_root_user_what_to_install():
    # `id` is redefined as a function: the helper sees a non-root user and must not call apt-get.
    script = (
        f"LOG_NAME=t; source {COMMON}; id() {{ echo 1000; }}; apt-get() {{ echo called; }}; "
        "apt_install /dev/null munge pdsh"
    )
    result = run(["bash", "-c", script])
    assert result.returncode == 1 and "called" not in result.stdout
    assert "t: missing munge pdsh: install them (Debian/Ubuntu: sudo apt-get install -y munge pdsh)" in result.stderr


def sbatch_directives() -> dict[str, str]:
    """The ``#SBATCH`` options Slurm reads: those before the first command (``##SBATCH`` is disabled)."""
    options: dict[str, str] = {}
    for line in SBATCH.read_text().splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            words = shlex.split(stripped[len("#SBATCH") :])
            assert len(words) == 1 and words[0].startswith("--"), f"write #SBATCH options as --key=value: {line}"
            key, _, value = words[0][2:].partition("=")
            assert key in SBATCH_OPTIONS, f"unknown sbatch option --{key}"
            options[key] = value
    assert all(not line.startswith("#SBATCH") for line in _after_first_command(SBATCH.read_text())), (
        "#SBATCH lines after the first command are ignored by Slurm"
    )
    return options


def _after_first_command(text: str) -> list[str]:
    lines = text.splitlines()[1:]
    for i, line in enumerate(lines):
        if line.strip() and not line.strip().startswith("#"):
            return lines[i:]
    return []


def test_sbatch_directives_parse():
    options = sbatch_directives()
    assert int(options["nodes"]) >= 2
    assert options["ntasks-per-node"] == "1"  # one torchrun launcher per node
    assert int(options["gpus-per-node"]) >= 1
    assert int(options["cpus-per-task"]) >= 1
    assert re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}", options["time"])
    assert options["output"]
    assert re.fullmatch(r"TERM@\d+", options["signal"])


def test_sbatch_launches_torchrun_rendezvous():
    text = SBATCH.read_text()
    for needle in (
        "torch.distributed.run",
        "--rdzv-backend c10d",
        "--rdzv-endpoint",
        "--rdzv-id",
        "--nnodes",
        "--nproc-per-node",
        "-m tokenmill.training.train",
        "--run-config",
        "--tokens-manifest",
        "--out-dir",
        'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1',
        "srun",
        "NCCL_SOCKET_IFNAME",
    ):
        assert needle in text, needle


def standin_slurm(tmp_path: Path, scontrol: str) -> Path:
    """A folder of stand-in Slurm commands for PATH: ``scontrol`` runs ``scontrol`` (a shell body), ``srun`` writes
    its arguments, one per line, to the file ``$SRUN_ARGS``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\n{scontrol}\n")
    (bin_dir / "srun").write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done > "$SRUN_ARGS"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def tokens_stub(tmp_path: Path) -> Path:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"stage": "tokenize"}))
    return tokens


def test_sbatch_runs_with_standin_slurm(tmp_path):
    """Run the template with stand-in ``scontrol``/``srun``: the launcher command parses with torchrun's own
    parser, the script arguments with tokenmill.training.train's, and the recorded config holds the job's layout."""
    from torch.distributed.run import get_args_parser

    from tokenmill.training.train import parse_args

    bin_dir = standin_slurm(tmp_path, '[ "$1 $2" = "show hostnames" ] || exit 3\nprintf "gpu-a\\ngpu-b\\n"')
    tokens = tokens_stub(tmp_path)
    out = tmp_path / "out"
    srun_args = tmp_path / "srun_args.txt"
    result = run(
        [
            "bash",
            str(SBATCH),
            "--set",
            "train.max_steps=7",
            "--set",
            "model.flavor=gpt2-small",
            "--set",
            "train.max_restarts=5",
        ],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SRUN_ARGS": str(srun_args),
            "SLURM_NNODES": "2",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "gpu-[a-b]",
            "SLURM_SUBMIT_DIR": str(REPO),
            "GPUS_PER_NODE": "4",
            "CONFIG": "conf/tiny.yaml",
            "TOKENS": str(tokens),
            "OUT_DIR": str(out),
        },
    )
    assert result.returncode == 0, result.stderr
    argv = srun_args.read_text().splitlines()
    assert argv[:3] == ["--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert argv[3] == sys.executable and argv[4:6] == ["-m", "torch.distributed.run"]
    torchrun = get_args_parser().parse_args(argv[6:])
    assert (torchrun.nnodes, torchrun.nproc_per_node) == ("2", "4")
    assert torchrun.rdzv_backend == "c10d" and torchrun.rdzv_id == "4242"
    assert torchrun.max_restarts == 5  # train.max_restarts
    assert torchrun.rdzv_endpoint == f"gpu-a:{29500 + 4242 % 1000}"
    assert torchrun.module and torchrun.training_script == "tokenmill.training.train"
    script_args = parse_args(torchrun.training_script_args)
    assert Path(script_args.run_config) == out / "config.yaml"
    assert Path(script_args.tokens_manifest) == tokens and Path(script_args.out_dir) == out
    cfg = load_config(out / "config.yaml")
    assert (cfg.train.launcher, cfg.train.nnodes, cfg.train.nproc) == ("torchrun", 2, 4)
    assert cfg.train.rdzv_endpoint == torchrun.rdzv_endpoint
    assert cfg.train.max_steps == 7 and cfg.model.flavor == "gpt2-small" and cfg.run.name == "tiny"


def test_sbatch_uses_a_resolved_run_config_as_is(tmp_path):
    """``train.launcher=slurm`` submits with RUN_CONFIG (the config.yaml train_stage wrote): the ranks read that
    file, unchanged, and --set arguments next to it are refused rather than ignored."""
    from tokenmill.core.config import dump_config
    from tokenmill.training.train import parse_args

    bin_dir = standin_slurm(tmp_path, "echo node-a")
    tokens = tokens_stub(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    run_config = out / "config.yaml"
    dump_config(load_config(overrides=["train.launcher=slurm", "train.nproc=3", "train.max_steps=5"]), run_config)
    before = run_config.read_text()
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SRUN_ARGS": str(tmp_path / "srun_args.txt"),
        "SLURM_NNODES": "1",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NODELIST": "node-a",
        "SLURM_SUBMIT_DIR": str(REPO),
        "GPUS_PER_NODE": "3",
        "RUN_CONFIG": str(run_config),
        "TOKENS": str(tokens),
        "OUT_DIR": str(out),
        "MLFLOW_RUN_ID": "abc123",
    }
    result = run(["bash", str(SBATCH)], env=env)
    assert result.returncode == 0, result.stderr
    argv = (tmp_path / "srun_args.txt").read_text().splitlines()
    script_args = parse_args(argv[argv.index("tokenmill.training.train") + 1 :])
    assert Path(script_args.run_config) == run_config and script_args.mlflow_run_id == "abc123"
    assert "--nproc-per-node" in argv and argv[argv.index("--nproc-per-node") + 1] == "3"
    assert run_config.read_text() == before

    refused = run(["bash", str(SBATCH), "--set", "train.max_steps=9"], env=env)
    assert refused.returncode != 0 and "RUN_CONFIG is used as is" in refused.stderr


def test_sbatch_fails_clearly_without_tokens(tmp_path):
    bin_dir = standin_slurm(tmp_path, "echo gpu-a")
    result = run(
        ["bash", str(SBATCH)],
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SLURM_NNODES": "1",
            "SLURM_JOB_ID": "1",
            "SLURM_JOB_NODELIST": "gpu-a",
            "TOKENS": str(tmp_path / "missing.json"),
            "OUT_DIR": str(tmp_path / "o"),
        },
    )
    assert result.returncode != 0
    assert "no tokenize manifest" in result.stderr


def test_hostfile_example_parses():
    hosts = {}
    for line in HOSTFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"(\S+)\s+slots=(\d+)", line.strip())
        assert m, f"not a 'host slots=N' line: {line!r}"
        assert m.group(1) not in hosts
        hosts[m.group(1)] = int(m.group(2))
    assert len(hosts) >= 2 and all(n >= 1 for n in hosts.values())
    from deepspeed.launcher.runner import fetch_hostfile  # DeepSpeed's own reader agrees

    assert dict(fetch_hostfile(str(HOSTFILE))) == hosts


def _train_commands(text: str) -> list[list[str]]:
    """The ``tokenmill train`` commands of a page's fenced blocks, continuation lines joined, as argument lists."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    words = [shlex.split(line, comments=True) for line in lines if line.strip()]
    return [w[2:] for w in words if w[:2] in (["tokenmill", "train"], [".venv/bin/tokenmill", "train"])]


def _launched(argv: list[str], tmp_path: Path) -> tuple[str, list[str]]:
    """The run name and what ``tokenmill train`` would start for ``argv``, its config resolved as the CLI does."""
    from tokenmill.cli import build_parser
    from tokenmill.resolve import resolve_config
    from tokenmill.training import launch

    args = build_parser().parse_args(["train", *argv])
    cfg = resolve_config(args.config and REPO / args.config, args.overrides)
    return cfg.run.name, launch.command(
        cfg.train, tmp_path / "config.yaml", tmp_path / "tokens.json", tmp_path / "out", None, cfg.run.name
    )


def test_the_documented_launches_are_what_tokenmill_train_starts(tmp_path):
    """infra/deepspeed/README.md shows a command and what it expands to, for each launcher. The expansion is read
    with the launcher's own parser and compared with what tokenmill's launcher builds from the command."""
    from deepspeed.launcher.runner import parse_args as deepspeed_args
    from torch.distributed.run import get_args_parser

    text = README.read_text()
    launches = {}
    for argv in _train_commands(text):
        if f"train.hostfile={LOCAL_HOSTFILE}" in argv:
            continue  # the one-machine example: its hostfile exists while local-ssh.sh is up (the next test)
        run_name, cmd = _launched(argv, tmp_path)
        launches["deepspeed" if "--hostfile" in cmd else "torchrun"] = (run_name, cmd)
    assert set(launches) == {"torchrun", "deepspeed"}

    run_name, cmd = launches["torchrun"]
    shown = re.search(r"`python -m torch\.distributed\.run ([^`]+)`", text).group(1)
    doc = get_args_parser().parse_args(shown.replace("<run name>", run_name).replace(" ...", "").split())
    real = get_args_parser().parse_args(cmd[3:])
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    for field in ("nnodes", "nproc_per_node", "rdzv_backend", "rdzv_endpoint", "rdzv_id", "module", "training_script"):
        assert getattr(doc, field) == getattr(real, field), field

    _, cmd = launches["deepspeed"]
    shown = re.search(r"`deepspeed (--hostfile[^`]+)`", text).group(1)
    doc, real = deepspeed_args(shown.replace(" ...", "").split()), deepspeed_args(cmd[1:])
    assert Path(cmd[0]).name == "deepspeed"
    assert (REPO / doc.hostfile).resolve() == Path(real.hostfile).resolve() == HOSTFILE
    for field in ("num_gpus", "no_local_rank", "module", "user_script"):
        assert getattr(doc, field) == getattr(real, field), field


def test_the_documented_one_machine_launch_uses_the_hostfile_local_ssh_writes():
    """The one-machine example of infra/deepspeed/README.md trains with the deepspeed launcher and the hostfile
    that ``local-ssh.sh up`` writes into its default folder."""
    from tokenmill.cli import build_parser
    from tokenmill.resolve import resolve_config

    (argv,) = [a for a in _train_commands(README.read_text()) if f"train.hostfile={LOCAL_HOSTFILE}" in a]
    args = build_parser().parse_args(["train", *argv])
    cfg = resolve_config(REPO / args.config, args.overrides)
    assert (cfg.train.launcher, cfg.train.nproc) == ("deepspeed", 1)
    env = run(["bash", str(LOCAL_SSH), "env"], env={"TOKENMILL_SSH_DIR": ""})
    assert env.returncode == 0, env.stderr
    assert f"TOKENMILL_SSH_DIR={Path(LOCAL_HOSTFILE).parent}" in env.stdout.split()


def test_the_documented_sbatch_runs_the_template_with_config_keys():
    """The ``sbatch`` lines submit the template with sbatch options, and the tokenmill options passed
    through it resolve."""
    from tokenmill.cli import build_parser
    from tokenmill.resolve import resolve_config

    for page in (README, REPO / "docs" / "training.md"):
        blocks = "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL))
        lines = [shlex.split(line, comments=True) for line in blocks.replace("\\\n", " ").splitlines()]
        sbatch = [w[w.index("sbatch") + 1 :] for w in lines if "sbatch" in w]
        assert sbatch, page
        for argv in sbatch:
            script = next(a for a in argv if a.endswith(".sbatch"))
            assert REPO / script == SBATCH, argv
            options = [a[2:].partition("=")[0] for a in argv[: argv.index(script)] if a.startswith("--")]
            assert set(options) <= SBATCH_OPTIONS, argv
            rest = argv[argv.index(script) + 1 :]
            args = build_parser().parse_args(["train", *rest])
            resolve_config(args.config and REPO / args.config, args.overrides)


@pytest.mark.parametrize("page", [README, REPO / "docs" / "training.md"], ids=lambda p: str(p.relative_to(REPO)))
def test_documented_set_keys_are_config_keys(page):
    overrides = [f"{k}={v}" for k, v in SET_ARG.findall(page.read_text())]
    assert len(overrides) >= 8
    for item in overrides:
        try:
            load_config(overrides=[item])
        except ConfigError as e:  # pragma: no cover - the message is the point
            pytest.fail(f"{page.name} uses --set {item}: {e}")


def test_gpu_check_dry_run(tmp_path):
    work = tmp_path / "work"
    result = run(["bash", str(GPU_CHECK), "--dry-run"], env={"WORK_DIR": str(work)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in (
        "gpt2-small",
        "auto",
        "ZeRO-2",
        "torch.distributed.run",
        "tokenmill.training.train",
        "tokens/s",
        "MFU",
    ):
        assert needle in out, needle
    assert not work.exists(), "--dry-run must not write anything"
    overrides = [f"{k}={v}" for k, v in SET_ARG.findall(out)]
    assert overrides, out
    for item in overrides:
        try:
            load_config(overrides=[item])
        except ConfigError as e:  # pragma: no cover
            pytest.fail(f"gpu_check.sh uses --set {item}: {e}")
    cfg = load_config(overrides=overrides)
    assert cfg.model.flavor == "gpt2-small" and cfg.model.block_size == 1024
    assert cfg.train.precision == "auto" and cfg.train.zero_stage == 2 and cfg.train.nproc == 1
    assert cfg.train.max_steps >= 100 and cfg.train.micro_batch_size * cfg.model.block_size >= 16 * 1024
    assert cfg.tracking.register_model is False and cfg.train.resume is False


def test_wheelhouse_dry_run_lists_pins_without_torch():
    result = run(["bash", str(WHEELHOUSE), "--dry-run"], env={"SET": "train"})
    assert result.returncode == 0, result.stderr
    pins = dict(line.strip().split("==") for line in result.stdout.splitlines() if re.fullmatch(r"  \S+==\S+", line))
    for name in ("deepspeed", "pydantic", "hjson", "tokenizers", "pyarrow", "numpy", "pyyaml", "safetensors"):
        assert name in pins, name
    assert not any(n == "torch" or n == "triton" or n.startswith("nvidia-") for n in pins)
    assert "--only-binary=:all:" in result.stdout and "--no-build-isolation" in result.stdout


@pytest.mark.e2e
def test_gpu_check_cpu_smoke(tmp_path):
    """Every phase of the GPU check on CPU with a debug model: env probe, synthetic tokens, the launch, the report."""
    results = tmp_path / "results"
    result = run(
        ["bash", str(GPU_CHECK), "--cpu-smoke"],
        env={"WORK_DIR": str(tmp_path / "work"), "RESULTS_DIR": str(results)},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu_check:   tokens/s" in result.stdout
    summary = json.loads((results / "gpu_check.json").read_text())
    assert summary["tokens_per_s"]["median"] > 0 and summary["device"] == "cpu"
    manifest = read_manifest(results / "train_manifest.json", "train")
    assert manifest["stage"] == "train" and manifest["steps"] == 20 and manifest["precision"] == "fp32"
    assert summary["precision"] == "fp32"  # the CPU smoke pins fp32
    tokens = read_manifest(tmp_path / "work" / "tokens" / "manifest.json", "tokenize")
    assert tokens["stage"] == "tokenize" and tokens["tokenizer"]["vocab_size"] == 1024
    assert set(tokens["splits"]) == {"train", "validation"}
