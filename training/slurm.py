"""``train.launcher: slurm``: submit ``infra/slurm/train.sbatch`` with ``sbatch`` and follow the job to its end.

The process that submits (the Prefect train task, ``tokenmill train``) holds no CPU while the job runs: it
looks at the job every ``train.poll_seconds`` and passes the new lines of the job's output file on. The job
trains into the MLflow run the submitter opened (``MLFLOW_RUN_ID``); the submitter still ends that run.

A job's state and exit code are read with ``scontrol show job``, which also knows ended jobs for
``MinJobAge`` seconds (300 by default); ``sacct`` is asked only after that, since it needs an accounting
database (slurmdbd) that a small or local Slurm may not have.

SIGTERM or SIGINT to the submitting process (a Prefect runner or worker cancelling the flow run, Ctrl-C)
cancels the job: first SIGTERM to its ranks, which write a checkpoint at the next step boundary and exit,
then, if the job is still there after a grace period, a plain ``scancel``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tokenmill.core.env import REPO_ROOT

log = logging.getLogger("tokenmill.train")

SBATCH_SCRIPT = REPO_ROOT / "infra" / "slurm" / "train.sbatch"
# Job states after which the job runs no more (squeue's long names). COMPLETED is the only good one.
ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
    "SPECIAL_EXIT",
}
# Seconds the ranks get between SIGTERM and a plain scancel: enough to finish a step and write a checkpoint.
CANCEL_GRACE_SECONDS = 120.0


class SlurmError(RuntimeError):
    """A Slurm command failed, or the job ended in another state than COMPLETED."""


def _slurm(args: list[str], timeout: float = 60, **popen) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **popen)
    except FileNotFoundError as e:
        raise SlurmError(
            f"{args[0]} not found: train.launcher=slurm needs Slurm's client commands on this machine "
            "(infra/slurm/local-cluster.sh up starts a one-node Slurm here)"
        ) from e


def output_file(out_dir: str | Path, job_id: str) -> Path:
    """Where the job's stdout and stderr go (``--output`` of :func:`submit`)."""
    return Path(out_dir) / f"slurm-{job_id}.out"


def submit(
    train,
    config_file: Path,
    tokens_manifest: Path,
    out_dir: Path,
    run_id: str | None,
    run_name: str = "tokenmill",
) -> str:
    """Submit ``train.sbatch`` for ``train`` (a ``TrainConfig``) with the resolved ``config_file``; the job id.

    ``train.nnodes`` nodes, ``train.nproc`` ranks on each; ``train.slurm_args`` come after these options
    and before the script, so they win over them and over the script's ``#SBATCH`` lines.
    """
    env = {
        **os.environ,
        # The submitter's interpreter and checkout: on a cluster they have to be on storage every node mounts.
        "REPO_DIR": str(REPO_ROOT),
        "PYTHON": sys.executable,
        "RUN_CONFIG": str(config_file),
        "TOKENS": str(tokens_manifest),
        "OUT_DIR": str(out_dir),
        "GPUS_PER_NODE": str(train.nproc),
        "MLFLOW_RUN_ID": run_id or "",
    }
    cmd = [
        "sbatch",
        "--parsable",
        "--export=ALL",
        f"--job-name=tokenmill-{run_name}",
        f"--nodes={train.nnodes}",
        f"--output={Path(out_dir) / 'slurm-%j.out'}",
        *train.slurm_args,
        str(SBATCH_SCRIPT),
    ]
    log.info("submitting: %s", " ".join(cmd))
    done = _slurm(cmd, timeout=120, env=env, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SlurmError(f"sbatch failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    # --parsable prints "<id>" or "<id>;<cluster>".
    job_id = done.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {done.stdout!r} {done.stderr!r}")
    return job_id


def state(job_id: str) -> tuple[str, str]:
    """The job's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ...) and exit code (``"0:0"``:
    the script's status and the signal that ended it), or ``("UNKNOWN", "")`` when Slurm no longer knows it."""
    shown = _slurm(["scontrol", "show", "job", "--oneliner", job_id])
    if shown.returncode == 0:
        fields = dict(re.findall(r"(\w+)=(\S*)", shown.stdout))
        if "JobState" in fields:
            return fields["JobState"], fields.get("ExitCode", "")
    # Gone from slurmctld's memory (MinJobAge): only the accounting database still knows it.
    acct = _slurm(["sacct", "--jobs", job_id, "--allocations", "--noheader", "--parsable2", "--format=State,ExitCode"])
    line = acct.stdout.strip().splitlines()[:1] if acct.returncode == 0 else []
    if line and "|" in line[0]:
        job_state, code = line[0].split("|", 1)
        return job_state.split()[0], code  # "CANCELLED by 0" -> CANCELLED
    return "UNKNOWN", ""


def in_queue(job_id: str) -> bool:
    """Whether the job is still pending, running or finishing (squeue lists it)."""
    listed = _slurm(["squeue", "--noheader", "--jobs", job_id, "--format=%T"])
    return listed.returncode == 0 and bool(listed.stdout.strip())


class _OutputTail:
    """The lines of the job's output file written since the last look (the file appears when the job starts)."""

    def __init__(self, path: Path, on_line: Callable[[str], None]):
        self.path, self.on_line = path, on_line
        self.offset, self.partial = 0, ""
        self.last: deque[str] = deque(maxlen=60)

    def read(self) -> None:
        try:
            with open(self.path, errors="replace") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()  # a line still being written
        for line in lines:
            self.last.append(line)
            self.on_line(line)


def follow(job_id: str, out_dir: str | Path, on_line: Callable[[str], None], poll_seconds: float = 5.0) -> None:
    """Wait for job ``job_id`` to end, passing the new lines of its output file to ``on_line`` at each look.

    Returns when it COMPLETED; raises :class:`SlurmError` naming the job, its state, its exit code and its
    last output lines when it ended otherwise (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, or
    CANCELLED by someone else).
    """
    _follow(job_id, _OutputTail(output_file(out_dir, job_id), on_line), poll_seconds)


def _follow(job_id: str, tail: _OutputTail, poll_seconds: float) -> None:
    unknown = 0
    while True:
        job_state, code = state(job_id)
        tail.read()
        # A slurmctld too busy to answer looks like a forgotten job once; three looks in a row do not lie.
        unknown = unknown + 1 if job_state == "UNKNOWN" else 0
        if job_state in ENDED or unknown >= 3:
            break
        time.sleep(poll_seconds)
    if job_state == "COMPLETED":
        return
    from tokenmill.training.launch import root_cause

    raise SlurmError(
        f"Slurm job {job_id} ended {job_state} (exit code {code or 'unknown'}): {root_cause(tail.last)}\n"
        f"last output ({tail.path}):\n" + "\n".join(tail.last)
    )


def cancel(job_id: str, grace_seconds: float = CANCEL_GRACE_SECONDS, poll_seconds: float = 2.0) -> None:
    """Stop the job: SIGTERM to its steps (torchrun passes it on; the ranks checkpoint at a step boundary
    and exit), then a plain ``scancel`` if it is still queued after ``grace_seconds``. Returns once it left
    the queue.

    Without ``--full``, scancel signals the job's steps and not its batch shell: the shell stays to wait for
    srun, so the job ends when the ranks have checkpointed rather than when the shell dies (which would
    have Slurm kill the ranks ``KillWait`` seconds later, checkpoint written or not). A pending job has no
    steps to signal; the plain scancel takes it out of the queue at once.
    """
    job_state, _ = state(job_id)
    if job_state == "RUNNING":
        log.warning("slurm: asking job %s to stop (SIGTERM to its ranks)", job_id)
        _slurm(["scancel", "--signal=TERM", job_id])
        deadline = time.monotonic() + grace_seconds
        while in_queue(job_id) and time.monotonic() < deadline:
            time.sleep(poll_seconds)
    if in_queue(job_id):
        log.warning("slurm: cancelling job %s", job_id)
        _slurm(["scancel", job_id])
        while in_queue(job_id):
            time.sleep(poll_seconds)


class _Signalled(BaseException):
    """Raised by the signal handler to leave the wait at once; turned into ``launch.Stopped``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def run(
    cfg,
    config_file: Path,
    tokens_manifest: Path,
    out_dir: Path,
    run_id: str | None,
    on_line: Callable[[str], None],
) -> str:
    """Submit the training of ``cfg`` (a ``Config``), tag the MLflow run with the job id, follow the job;
    the job id. A signal while following cancels the job and raises ``launch.Stopped``."""
    from tokenmill.core import tracking
    from tokenmill.training.launch import Stopped, on_stop_signals

    def leave_the_wait(signum, frame):
        raise _Signalled(signum)

    job_id = submit(cfg.train, config_file, tokens_manifest, out_dir, run_id, cfg.run.name)
    log.info("slurm: job %s submitted; output in %s", job_id, output_file(out_dir, job_id))
    if run_id:
        tracking.MlflowLogger(cfg.tracking_uri, run_id).set_tags({"tokenmill.slurm_job_id": job_id})
    tail = _OutputTail(output_file(out_dir, job_id), on_line)
    try:
        with on_stop_signals(leave_the_wait):
            _follow(job_id, tail, cfg.train.poll_seconds)
    except _Signalled as e:
        # Ignored while cancelling: a repeated signal (Ctrl-C twice) must not leave the job running.
        with on_stop_signals(signal.SIG_IGN):
            log.warning("slurm: %s received; cancelling job %s", signal.Signals(e.signum).name, job_id)
            cancel(job_id)
            tail.read()  # what the ranks said while stopping: the step of their last checkpoint
        raise Stopped(e.signum) from None
    return job_id
