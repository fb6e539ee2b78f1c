"""Start ``tokenmill.training.train`` on ``train.nproc`` processes with torchrun and follow its output.

Shared by the pipeline flow's train task and ``tokenmill train``. ``train.launcher: slurm`` submits a Slurm
job instead (``training.slurm``); :func:`launch` chooses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from tokenmill.core.env import REPO_ROOT

log = logging.getLogger("tokenmill.train")

LAUNCHERS = ("torchrun", "deepspeed", "slurm")

# How long the ranks get to write their checkpoint and leave after a stop is forwarded (torchrun reads it too);
# a second signal, or this much time on top, ends every process of the run with SIGKILL.
SHUTDOWN_SECONDS = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "150"))


class Stopped(Exception):
    """Training was stopped by a signal forwarded to it; ``code`` is the shell's exit status for it (128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(signum)  # the signal alone, so the exception pickles (Prefect persists task failures)
        self.signum, self.code = signum, 128 + signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def launch(cfg, config_file: Path, tokens_manifest: Path, out_dir: Path, run_id: str | None, on_line) -> None:
    """Train ``cfg`` (a ``Config``) with its ``train.launcher``: here (torchrun, deepspeed) or as a Slurm job."""
    if cfg.train.launcher == "slurm":
        from tokenmill.training import slurm

        slurm.run(cfg, config_file, tokens_manifest, out_dir, run_id, on_line)
        return
    cmd = command(cfg.train, config_file, tokens_manifest, out_dir, run_id, cfg.run.name)
    log.info("launching: %s", " ".join(cmd))
    run(cmd, on_line)


def command(
    train, config_file: Path, tokens_manifest: Path, out_dir: Path, run_id: str | None, run_name: str = "tokenmill"
) -> list[str]:
    """The launcher command line for ``train`` (a ``TrainConfig``):

    - one node: ``torchrun --standalone --nproc-per-node N``; torchrun restarts the ranks up to
      ``train.max_restarts`` times after one fails, and they resume from the last checkpoint;
    - several nodes with torchrun: the same command on every node, meeting at ``train.rdzv_endpoint``
      (c10d rendezvous; ``infra/slurm/train.sbatch`` does this under Slurm);
    - ``train.launcher=deepspeed``: DeepSpeed's launcher, which starts every node of ``train.hostfile`` over ssh.
    """
    script = ["--run-config", str(config_file), "--tokens-manifest", str(tokens_manifest), "--out-dir", str(out_dir)]
    script += ["--mlflow-run-id", run_id] if run_id else []
    if train.launcher == "deepspeed":
        if not train.hostfile:
            raise ValueError("train.launcher=deepspeed needs train.hostfile (see infra/deepspeed/hostfile.example)")
        if not Path(train.hostfile).is_file():
            raise FileNotFoundError(f"train.hostfile {train.hostfile} does not exist")
        deepspeed = Path(sys.executable).with_name("deepspeed")
        return [
            str(deepspeed),
            "--hostfile",
            str(train.hostfile),
            "--num_gpus",
            str(train.nproc),
            "--no_local_rank",
            "--module",
            "tokenmill.training.train",
            *script,
        ]
    if train.launcher != "torchrun":
        raise ValueError(f"train.launcher must be torchrun or deepspeed, got {train.launcher!r}")
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={train.nproc}"]
    run += [f"--max-restarts={train.max_restarts}"]
    if train.nnodes > 1:
        if not train.rdzv_endpoint:
            raise ValueError(
                f"train.nnodes={train.nnodes} needs train.rdzv_endpoint=host:port (a node all of them "
                "reach); start the same command on every node"
            )
        run += [
            f"--nnodes={train.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={train.rdzv_endpoint}",
            f"--rdzv-id={run_name}",
        ]
    else:
        run += ["--standalone"]
    return [*run, "-m", "tokenmill.training.train", *script]


def run(cmd: list[str], on_line: Callable[[str], None]) -> None:
    """Run ``cmd``, passing rank log lines and errors to ``on_line``; raise with the root cause on failure.

    SIGTERM or SIGINT to this process (``kill``, ``timeout``, a container stop, Ctrl-C, a Prefect cancellation)
    is forwarded as SIGTERM: the ranks write a checkpoint at the next step boundary and exit, and this raises
    ``Stopped``. So does a stop the ranks report after the launcher itself was signalled. No process of the
    run outlives this call.
    """
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(SHUTDOWN_SECONDS),
    }
    tail: deque[str] = deque(maxlen=60)
    reported = None  # the signal the ranks say they stopped on
    # A session of its own: Ctrl-C in a terminal reaches this process only, which forwards it as a clean stop,
    # instead of interrupting every rank mid-step. If this process dies without forwarding (SIGKILL), the
    # launcher gets SIGTERM from the kernel (parent-death signal) and stops the ranks itself.
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
        preexec_fn=_terminate_with_parent,
    ) as proc:
        with _ProcessTree(proc) as tree, _forwarding_stops(proc, tree) as received:
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                if "[rank " in line or "Error" in line:
                    on_line(line)
                if m := _STOP_LINE.search(line):
                    reported = signal.Signals[m.group(1)]
            proc.wait()
    signum = received[0] if received else reported
    if signum is not None and proc.returncode != 0:
        raise Stopped(signum)
    if proc.returncode != 0:
        raise RuntimeError(
            f"training exited with code {proc.returncode}: {root_cause(tail)}\nlast output:\n" + "\n".join(tail)
        )


_STOP_LINE = re.compile(r"\[rank 0\] train: stopped by (SIG[A-Z]+) after step")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what a stop is: kill, timeout, a container stop, Ctrl-C, Prefect


@contextlib.contextmanager
def on_stop_signals(handler) -> Iterator[None]:
    """``handler`` (a ``signal`` handler, or ``SIG_IGN``) for SIGTERM and SIGINT while the block runs, the previous
    handlers after it. Only the main thread can set handlers: elsewhere this does nothing, and the caller's own
    handling of a stop applies."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def _forwarding_stops(proc: subprocess.Popen, tree: _ProcessTree) -> Iterator[list[int]]:
    """While the block runs, SIGTERM and SIGINT to this process send SIGTERM to ``proc`` (the first time) or
    SIGKILL to every process of ``tree`` (again); yields the list of signals received."""
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        if len(received) == 1:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        else:
            tree.kill()

    with on_stop_signals(forward):
        yield received


def _terminate_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the process that started it dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _ProcessTree:
    """Every process started under ``proc``, noted once a second while it runs (the ranks run in sessions of
    their own and outlive a launcher that dies first, so they are found while it lives). On exit from the block:
    the launcher gets the shutdown time to finish (it is killed if the block ended by an exception), then every
    process still alive is SIGKILLed."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.known, self.done = proc, {}, threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _ProcessTree:
        self.watcher.start()
        return self

    def _watch(self) -> None:
        while True:
            self.note()
            if self.done.wait(1.0):
                return

    def note(self) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.known.setdefault(p.pid, p)

    def kill(self) -> None:
        import psutil

        self.note()
        for p in [*self.known.values()]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def __exit__(self, kind, error, tb) -> None:
        import psutil

        if kind is not None:
            self.kill()
        try:
            self.proc.wait(timeout=SHUTDOWN_SECONDS + 30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        self.done.set()
        self.watcher.join()
        _, alive = psutil.wait_procs([*self.known.values()], timeout=SHUTDOWN_SECONDS)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()


_EXCEPTION_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Interrupt|Exit)\b.*)$")


def root_cause(lines) -> str:
    """The last exception line a rank printed (torchrun repeats the root cause's traceback last)."""
    causes = [m.group(1) for m in map(_EXCEPTION_LINE.match, lines) if m and "ChildFailedError" not in m.group(1)]
    return causes[-1] if causes else "no exception message found"
