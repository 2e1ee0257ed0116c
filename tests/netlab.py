"""A network of hosts on one machine, for multi-host tests and benchmarks.

Each host is a network namespace with one veth link to a shared bridge and its own
address. A host's link can be shaped with ``tbf``: its uplink on its own end of the
veth, its downlink on the bridge's end. Processes run inside a host with
``ip netns exec``; traffic between hosts crosses the bridge and nothing else, so it
never leaves the machine.

Every name the lab creates starts with its prefix, so a lab can always find what an
earlier run left behind (a killed run, say) and remove it before it starts:
``Lab.open`` cleans up first, and ``Lab.close`` (or leaving the ``with`` block) stops
the processes and removes the namespaces, links and bridge. It needs root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

#: Clock ticks per second, for the CPU times in /proc/<pid>/stat.
_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: tbf's bucket: large enough for a fast link to reach its rate, small enough that
#: the rate holds over a fraction of a second.
_BURST_BYTES: Final = 256 * 1024
_QUEUE_LATENCY: Final = "50ms"


class LabError(RuntimeError):
    pass


def can_build_labs() -> str | None:
    """Why a lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} (iproute2) is not installed"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


class Host:
    """One machine of the lab: a namespace, an address, and its processes."""

    def __init__(self, lab: Lab, name: str, index: int) -> None:
        self.lab = lab
        self.name = name
        self.namespace = f"{lab.prefix}-{name}"
        self.ip = f"{lab.subnet}.{index}"
        # The host's end of the link, and the bridge's end.
        self.inside = f"{lab.prefix}{index}i"
        self.outside = f"{lab.prefix}{index}o"
        self.processes: list[subprocess.Popen[bytes]] = []

    def _create(self) -> None:
        lab = self.lab
        _run("ip", "netns", "add", self.namespace)
        _run("ip", "link", "add", self.inside, "type", "veth", "peer", self.outside)
        _run("ip", "link", "set", self.outside, "master", lab.bridge, "up")
        _run("ip", "link", "set", self.inside, "netns", self.namespace)
        self.ip_command("addr", "add", f"{self.ip}/24", "dev", self.inside)
        self.ip_command("link", "set", self.inside, "up")
        self.ip_command("link", "set", "lo", "up")

    def ip_command(self, *argv: str) -> None:
        _run("ip", "-n", self.namespace, *argv)

    def shape(self, *, up_mbit: float | None, down_mbit: float | None) -> None:
        """Limit the host's uplink and downlink (Mbit/s; None: unlimited)."""
        if up_mbit is not None:
            _run("ip", "netns", "exec", self.namespace, *_tbf(self.inside, up_mbit))
        if down_mbit is not None:
            _run(*_tbf(self.outside, down_mbit))

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the host; it is stopped when the lab closes."""
        output: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            output = log.open("ab")
        try:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *argv],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own group, so stopping it stops what it started.
                start_new_session=True,
            )
        finally:
            if not isinstance(output, int):
                output.close()
        self.processes.append(process)
        return process

    def run(
        self, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host to its end."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def traffic(self) -> tuple[int, int]:
        """Bytes (received, sent) by the host on its link so far."""
        base = Path("/sys/class/net") / self.outside / "statistics"
        # The bridge's end sees the host's traffic mirrored.
        received = int((base / "tx_bytes").read_text())
        sent = int((base / "rx_bytes").read_text())
        return received, sent

    def stop_processes(self) -> None:
        for process in self.processes:
            _stop_group(process)
        self.processes.clear()


class Lab:
    """Hosts on a bridge. Use as a context manager, or call ``close``."""

    def __init__(self, prefix: str = "dpl", subnet: str = "198.18.7") -> None:
        if len(prefix) > 6:
            raise ValueError("the prefix must be short: interface names are 15 bytes")
        self.prefix = prefix
        self.subnet = subnet
        self.bridge = f"{prefix}br"
        self.hosts: dict[str, Host] = {}

    @classmethod
    def open(cls, prefix: str = "dpl", subnet: str = "198.18.7") -> Lab:
        _exit_on_sigterm()
        lab = cls(prefix, subnet)
        lab.clean_up()
        _run("ip", "link", "add", lab.bridge, "type", "bridge")
        _run("ip", "link", "set", lab.bridge, "up")
        return lab

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_host(self, name: str) -> Host:
        if name in self.hosts:
            raise ValueError(f"host {name} exists already")
        if len(self.hosts) >= 250:
            raise LabError("a lab holds at most 250 hosts")
        host = Host(self, name, len(self.hosts) + 1)
        self.hosts[name] = host
        host._create()
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop_processes()
        self.hosts.clear()
        self.clean_up()

    def clean_up(self) -> None:
        """Remove whatever carries the prefix: namespaces (and anything still
        running in them), links and the bridge."""
        for namespace in self.leftovers():
            pids = _run("ip", "netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                _kill(int(pid))
            _run("ip", "netns", "del", namespace, check=False)
        links = _run("ip", "-o", "link", "show").stdout.splitlines()
        for line in links:
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(self.prefix):
                _run("ip", "link", "del", name, check=False)

    def leftovers(self) -> list[str]:
        """The namespaces of this prefix that exist now."""
        listed = _run("ip", "netns", "list").stdout.splitlines()
        names = [line.split()[0] for line in listed if line.strip()]
        return [name for name in names if name.startswith(f"{self.prefix}-")]


def _exit_on_sigterm() -> None:
    """Make SIGTERM (a CI timeout, ``kill``) end the process as Ctrl-C would, so
    that the lab's ``with`` blocks and ``finally`` clauses remove what it built;
    Python's default is to die at once. Left alone where a handler is set already,
    or off the main thread, where handlers cannot be set."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a live process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14 to 17 of the whole line.
    return sum(int(value) for value in fields[11:15]) / _TICKS


def _tbf(device: str, mbit: float) -> list[str]:
    rate = f"{mbit * 1000:.0f}kbit"
    return [
        "tc", "qdisc", "replace", "dev", device, "root", "tbf",
        "rate", rate, "burst", str(_BURST_BYTES), "latency", _QUEUE_LATENCY,
    ]  # fmt: skip


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
