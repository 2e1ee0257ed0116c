"""Real clusters for tests: a scheduler and daemons as separate processes on
loopback, each with its own store and ports, driven through their command lines."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from .origin import free_port

# Short enough that a killed host is noticed within a test, long enough for a
# loaded machine to keep announcing on time.
SCHEDULER_OPTIONS = (
    "--keepalive=0.5",
    "--host-ttl=3",
    "--seed-timeout=3",
    "--restart-grace=3",
)
_START_TIMEOUT = 30.0


class Process:
    """A dragonpy process and its log."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dragonpy_cli", *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self, url: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, like a hung host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Scheduler(Process):
    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        argv = [
            "scheduler",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            f"--metrics-port={self.metrics_port}",
            "--log-level=debug",
            *SCHEDULER_OPTIONS,
            *extra,
        ]
        super().__init__("scheduler", argv, workdir / "scheduler.log")

    def start(self) -> None:
        super().start()
        self.wait_healthy(f"http://{self.address}/healthy")


class Daemon(Process):
    def __init__(
        self,
        workdir: Path,
        name: str,
        scheduler: Scheduler | None,
        *extra: str,
        seed: bool = False,
    ) -> None:
        self.store = workdir / name / "store"
        self.piece_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proxy_port = free_port()
        argv = [
            "daemon",
            f"--store={self.store}",
            f"--hostname={name}",
            "--ip=127.0.0.1",
            "--listen=127.0.0.1",
            f"--piece-port={self.piece_port}",
            f"--health-port={self.health_port}",
            f"--metrics-port={self.metrics_port}",
            f"--proxy-port={self.proxy_port}",
            "--log-level=info",
            *(["--scheduler", scheduler.address] if scheduler else []),
            *(["--seed"] if seed else []),
            *extra,
        ]
        (workdir / name).mkdir(parents=True, exist_ok=True)
        super().__init__(name, argv, workdir / name / "daemon.log")

    def start(self) -> None:
        super().start()
        self.wait_healthy(f"http://127.0.0.1:{self.health_port}/healthy")

    def get(self, url: str, output: Path, *extra: str) -> subprocess.Popen[bytes]:
        """``dragonpy get`` through this daemon (they share its store)."""
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dragonpy_cli",
                "get",
                url,
                "-O",
                str(output),
                f"--store={self.store}",
                "--json",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the daemon's /metrics, 0 when absent."""
        body = httpx.get(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ).text
        selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
        wanted = f"{name}{{{selector}}}" if labels else name
        for line in body.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return 0.0

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def finish(process: subprocess.Popen[bytes], timeout: float = 90) -> tuple[int, str]:
    """Wait for a ``dragonpy get``; its exit code and stderr."""
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr.decode()


def abandon(process: subprocess.Popen[bytes]) -> None:
    """Kill a ``dragonpy get`` whose daemon is gone, and close its pipes."""
    process.kill()
    process.communicate(timeout=10)


def origin_bytes(nginx_dir: Path, path: str) -> int:
    """Body bytes nginx sent for ``path`` (from its access log)."""
    log = nginx_dir / "access.log"
    total = 0
    for line in log.read_text().splitlines() if log.exists() else []:
        fields = line.split()
        if len(fields) >= 2 and fields[1] == path:
            total += int(fields[-1])
    return total


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[Scheduler | Daemon] = []
        self.scheduler: Scheduler | None = None

    def start_scheduler(self) -> Scheduler:
        self.scheduler = Scheduler(self.workdir)
        self.scheduler.start()
        self.processes.append(self.scheduler)
        return self.scheduler

    def start_daemon(self, name: str, *extra: str, seed: bool = False) -> Daemon:
        daemon = Daemon(self.workdir, name, self.scheduler, *extra, seed=seed)
        daemon.start()
        self.processes.append(daemon)
        return daemon

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(
            f"----- {process.name}\n{process.log.read_text()}"
            for process in self.processes
            if process.log.exists()
        )
