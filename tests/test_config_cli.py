"""``dragonpy config``, ``--config`` and SIGHUP, through the command line and in
real daemon and scheduler processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from dragonpy._config import KINDS, DaemonSettings, keys, load, parse_size
from dragonpy_cli._app import cli
from dragonpy_cli._daemon import daemon
from dragonpy_cli._scheduler import scheduler
from dragonpy_cli._settings import LiveSettings, SettingOption

from .cluster import Cluster, Process, Scheduler
from .origin import TrickyOrigin

DOCS = Path(__file__).parent.parent / "docs" / "config.md"
COMMANDS = {"daemon": daemon, "scheduler": scheduler}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# dragonpy config


def test_check_accepts_a_good_file_and_says_what_it_changes(tmp_path: Path) -> None:
    file = tmp_path / "daemon.yaml"
    file.write_text("proxy: {prefetch: true}\nupload: {bandwidthLimit: 1GB}\n")

    code, output = run("config", "check", str(file))

    assert code == 0
    assert output == (
        f"{file}: ok, a daemon configuration; 2 keys differ from the defaults: "
        "upload.bandwidthLimit, proxy.prefetch\n"
    )


def test_check_refuses_a_bad_file_with_its_key_path(tmp_path: Path) -> None:
    file = tmp_path / "scheduler.yaml"
    file.write_text("scheduler: {candidateParentLimit: 0}\n")

    code, output = run("config", "check", str(file), "--kind", "scheduler")

    assert code == 2
    assert output == (
        f"dragonpy: error: {file}: scheduler.candidateParentLimit: 0 is out of "
        "range; allowed: 1 to 64\n"
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_printed_default_file_checks_and_loads_to_the_defaults(
    tmp_path: Path, kind: str
) -> None:
    code, text = run("config", "default", "--kind", kind)
    file = tmp_path / f"{kind}.yaml"
    file.write_text(text)

    assert code == 0
    assert load(KINDS[kind], file) == KINDS[kind]()
    assert run("config", "check", str(file), "--kind", kind) == (
        0,
        f"{file}: ok, a {kind} configuration; 0 keys differ from the defaults\n",
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_key_tables_in_the_docs_are_current(kind: str) -> None:
    code, table = run("config", "keys", "--kind", kind)

    assert code == 0
    # When this fails, paste the output of ``dragonpy config keys`` into the docs.
    assert table in DOCS.read_text()


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_setting_option_names_a_key_and_shows_its_default(kind: str) -> None:
    paths = {key.path: key for key in keys(KINDS[kind])}
    defaults = KINDS[kind]()
    for option in COMMANDS[kind].params:
        if not isinstance(option, SettingOption):
            continue
        key = paths[option.key]
        shown = option.default
        if key.path == "storage.capacity":
            shown = parse_size(str(shown))
        if isinstance(shown, str | int | float | Path):
            assert shown == key.value(defaults), option.opts


# Starting up


def test_a_daemon_with_a_bad_file_exits_with_one_line(tmp_path: Path) -> None:
    file = tmp_path / "daemon.yaml"
    file.write_text("proxy:\n  rules:\n    - regex: ok\n    - regex: '(('\n")

    result = CliRunner().invoke(cli, ["daemon", "--config", str(file)])

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith(
        f"dragonpy: error: {file}: proxy.rules[1].regex: '((' is not a regular "
        "expression"
    )
    assert len(result.output.splitlines()) == 1


def settings_of(command: click.Command, *args: str) -> LiveSettings[DaemonSettings]:
    context = command.make_context(command.name, list(args))
    return LiveSettings(DaemonSettings, context)


@pytest.mark.parametrize(
    ("file", "variable", "option", "port"),
    [
        (False, False, False, 4000),
        (True, False, False, 5000),
        (True, True, False, 6000),
        (True, True, True, 7000),
        (False, True, True, 7000),
    ],
)
def test_options_override_variables_override_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file: bool,
    variable: bool,
    option: bool,
    port: int,
) -> None:
    config = tmp_path / "daemon.yaml"
    config.write_text("upload: {server: {port: 5000}}\n")
    if variable:
        monkeypatch.setenv("DRAGONPY_UPLOAD_SERVER_PORT", "6000")
    args = [
        *(["--config", str(config)] if file else []),
        *(["--piece-port", "7000"] if option else []),
    ]

    settings = settings_of(daemon, *args)

    assert settings.current.upload.server.port == port


def test_the_variables_the_commands_always_read_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAGONPY_LOG_LEVEL", "debug")
    monkeypatch.setenv("DRAGONPY_STORE", str(tmp_path))
    monkeypatch.setenv("DRAGONPY_STORE_CAPACITY", "1GiB")

    current = settings_of(daemon).current

    assert current.log.level == "debug"
    assert current.storage.dir == tmp_path
    assert current.storage.capacity == 1024**3


def test_options_turn_rules_and_registries_into_keys() -> None:
    current = settings_of(
        daemon, "--p2p-rule", "a", "--p2p-rule", "b", "--registry", "localhost:5000"
    ).current

    assert [rule.regex for rule in current.proxy.rules] == ["a", "b"]
    assert current.proxy.registries == ("localhost:5000",)


# SIGHUP, in real processes


def wait_for_line(process: Process, text: str, timeout: float = 20) -> str:
    """The log once a line contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = process.log.read_text()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the log of {process.name}:\n{log}")


def daemon_file(path: Path, origin: str, rule: str, extra: str = "") -> None:
    path.write_text(
        f"log: {{format: json}}\n"
        f"proxy:\n  registries: [{origin}]\n  authCheck: false\n"
        f"  rules: [{{regex: '{rule}'}}]\n{extra}"
    )


def test_sighup_gives_a_running_daemon_new_rules(
    tmp_path: Path, cluster: Cluster, tricky: TrickyOrigin
) -> None:
    tricky.content["/v2/app/blobs/layer"] = b"layer" * 1000
    file = tmp_path / "daemon.yaml"
    daemon_file(file, tricky.url, "^/nothing$")
    node = cluster.start_daemon("node", "--config", str(file))
    url = f"http://127.0.0.1:{node.proxy_port}/v2/app/blobs/layer"

    before = httpx.get(url, timeout=10)
    assert before.content == b"layer" * 1000
    assert "x-dragonpy-task-id" not in before.headers

    # New rules, and keys a running daemon cannot change: one given as an option
    # too (it wins still), one only in the file.
    extra = "upload: {server: {port: 1}}\nstorage: {capacity: 1GiB}\n"
    daemon_file(file, tricky.url, "blobs/", extra)
    assert node.process is not None
    node.process.send_signal(signal.SIGHUP)
    wait_for_line(node, "configuration reloaded: proxy.rules")

    after = httpx.get(url, timeout=10)
    assert after.content == b"layer" * 1000
    assert after.headers["x-dragonpy-source"] == "origin"
    assert "needs a restart: storage.capacity" in node.log_text()

    file.write_text("proxy: {rules: [{regex: '('}]}\n")
    node.process.send_signal(signal.SIGHUP)
    log = wait_for_line(node, "configuration not reloaded")

    again = httpx.get(url, timeout=10)
    assert again.headers["x-dragonpy-source"] == "local"
    assert f"{file}: proxy.rules[0].regex: '(' is not a regular expression" in log
    lines = [json.loads(line) for line in log.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["level"] == "WARNING" for line in lines)


def test_sighup_changes_how_a_scheduler_logs(tmp_path: Path, cluster: Cluster) -> None:
    file = tmp_path / "scheduler.yaml"
    file.write_text("log: {format: text}\n")
    process = Scheduler(tmp_path, "--config", str(file))
    cluster.processes.append(process)
    process.start()
    assert process.process is not None

    file.write_text("log: {format: json}\ngc: {peerTTL: 2h}\n")
    process.process.send_signal(signal.SIGHUP)
    wait_for_line(process, "configuration reloaded: log.format")
    process.process.send_signal(signal.SIGHUP)
    log = wait_for_line(process, '"message": "configuration reloaded: no change"')

    assert "needs a restart: gc.peerTTL" in log
