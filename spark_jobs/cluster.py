"""A Spark standalone cluster (one master, N workers) on this machine, from the scripts pyspark ships.

    python -m tokenmill.spark_jobs.cluster --workers 2     # start, print the master URL, wait for Ctrl-C

Jobs reach it with ``data.spark_master: spark://127.0.0.1:<port>``. Tests use ``StandaloneCluster``
as a context manager. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


class StandaloneCluster:
    """Starts a master and ``workers`` workers as child processes; ``url`` is the master's ``spark://`` URL."""

    def __init__(
        self,
        workers: int = 1,
        cores_per_worker: int = 1,
        memory_per_worker: str = "1g",
        log_dir: str | Path | None = None,
    ):
        self.workers = workers
        self.cores = cores_per_worker
        self.memory = memory_per_worker
        self.log_dir = Path(log_dir) if log_dir else None
        self.port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []

    def _spawn(self, name: str, *args: str) -> None:
        out = subprocess.DEVNULL
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "wb")
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        self._procs.append(subprocess.Popen([_spark_class(), *args], stdout=out, stderr=subprocess.STDOUT, env=env))

    def executor_pids(self, worker: int) -> list[int]:
        """The process ids of the executor JVMs worker ``worker`` (0-based) runs now, for fault tests."""
        import psutil

        pids = []
        for child in psutil.Process(self._procs[1 + worker].pid).children(recursive=True):  # the master came first
            try:
                if any("CoarseGrainedExecutorBackend" in part for part in child.cmdline()):
                    pids.append(child.pid)
            except psutil.Error:  # gone, or a zombie not yet reaped: no executor to kill
                pass
        return pids

    def alive_workers(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return sum(w["state"] == "ALIVE" for w in json.load(r)["workers"])

    def start(self, timeout: float = 120) -> StandaloneCluster:
        self._spawn(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            str(self.ui_port),
        )
        for i in range(self.workers):
            self._spawn(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--webui-port",
                str(_free_port()),
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self._procs):
                self.stop()
                raise RuntimeError(
                    "a Spark master or worker process exited during start-up"
                    + (f"; see {self.log_dir}" if self.log_dir else "")
                )
            try:
                if self.alive_workers() == self.workers:
                    return self
            except OSError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"Spark standalone cluster not ready after {timeout:.0f} s")

    def stop(self) -> None:
        for p in reversed(self._procs):
            p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    from tokenmill.core.env import prepare_environment

    prepare_environment()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cores-per-worker", type=int, default=1)
    p.add_argument("--memory-per-worker", default="2g")
    args = p.parse_args()
    with StandaloneCluster(args.workers, args.cores_per_worker, args.memory_per_worker) as cluster:
        print(f"Spark master: {cluster.url}  (UI http://127.0.0.1:{cluster.ui_port}); Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
