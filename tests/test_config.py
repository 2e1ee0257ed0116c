"""Configuration files: loading, every kind of mistake and its message, the order
of overrides, units, reloading, the default file, and what logs may print."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dragonpy import DaemonConfig, SchedulerConfig
from dragonpy._config import (
    KINDS,
    DaemonSettings,
    Override,
    SchedulerSettings,
    changed,
    default_file,
    environment,
    format_duration,
    format_size,
    keys,
    load,
    parse_duration,
    parse_size,
    take_reloadable,
)
from dragonpy._download import DEFAULT_STORE_DIR
from dragonpy._errors import ConfigError
from dragonpy_cli._logs import redact
from dragonpy_cli._serve import configure_logging

GIB = 1024**3


def write(tmp_path: Path, text: str, name: str = "daemon.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problem(tmp_path: Path, text: str, kind: type = DaemonSettings) -> str:
    with pytest.raises(ConfigError) as raised:
        load(kind, write(tmp_path, text))
    return str(raised.value).replace(f"{tmp_path}/", "")


# Loading


def test_without_a_file_the_daemon_runs_as_it_always_did() -> None:
    expected = DaemonConfig(store_dir=DEFAULT_STORE_DIR, hostname=socket.gethostname())
    assert load(DaemonSettings).daemon_config() == expected


def test_without_a_file_the_scheduler_runs_as_it_always_did() -> None:
    assert load(SchedulerSettings).scheduler_config() == SchedulerConfig()


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    assert load(DaemonSettings, write(tmp_path, "")) == DaemonSettings()


def test_a_file_with_dragonfly_keys_sets_the_daemon(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        """
host: {hostname: node-1, ip: 10.0.0.5, idc: dc1, location: eu|fr|paris}
seedPeer: {enable: true}
scheduler: {addr: "scheduler:8002", fallbackAfter: 2m}
download: {concurrentPieceCount: 16, pieceTimeout: 40s}
upload:
  server: {port: 4100, transport: http}
  concurrentPieceCount: 64
  bandwidthLimit: 100MB
proxy:
  server: {port: 65001}
  registries: [https://registry.example, "localhost:5000"]
  rules:
    - regex: blobs/sha256.*
    - regex: /v2/.*/manifests/
  prefetch: true
storage: {dir: /var/lib/dragonpy, capacity: 500GiB}
gc:
  policy: {taskTTL: 720h, diskHighThresholdPercent: 80, diskLowThresholdPercent: 60}
""",
    )
    config = load(DaemonSettings, file).daemon_config()

    assert (config.hostname, config.ip, config.idc) == ("node-1", "10.0.0.5", "dc1")
    assert config.seed and config.scheduler == "scheduler:8002"
    assert (config.fallback_after, config.piece_timeout) == (120.0, 40.0)
    assert (config.piece_port, config.transport, config.concurrency) == (
        4100,
        "http",
        16,
    )
    assert (config.upload.max_concurrent_pieces, config.upload.bandwidth) == (
        64,
        100_000_000,
    )
    assert config.proxy.port == 65001 and config.proxy.prefetch
    assert config.proxy.registries == ("https://registry.example", "localhost:5000")
    assert config.proxy.rules == ("blobs/sha256.*", "/v2/.*/manifests/")
    assert config.store_dir == Path("/var/lib/dragonpy")
    assert config.store_policy.capacity == 500 * GIB
    assert config.store_policy.task_ttl == 30 * 86400
    assert (config.store_policy.high, config.store_policy.low) == (0.8, 0.6)


def test_a_file_sets_the_scheduler(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "server: {port: 9002}\nscheduler: {announceInterval: 1s}\ngc: {hostTTL: 3s}\n",
        "scheduler.yaml",
    )
    settings = load(SchedulerSettings, file)

    assert settings.server.port == 9002
    assert settings.scheduler_config().keepalive == 1.0
    assert settings.scheduler_config().host_ttl == 3.0


# Mistakes: each names the file, the key path and what is allowed.


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "proxy:\n  rules:\n    - regex: blobs\n    - regex: '('\n",
            "daemon.yaml: proxy.rules[1].regex: '(' is not a regular expression "
            "(missing ), unterminated subpattern at position 0)",
        ),
        (
            "proxy: {ruls: []}",
            "daemon.yaml: proxy.ruls: unknown key; allowed here: server, registries, "
            "allowAnyRegistry, rules, authCheck, stallTimeout, prefetch",
        ),
        (
            "upload: {server: {port: 70000}}",
            "daemon.yaml: upload.server.port: 70000 is not a port; allowed: 0 to 65535 "
            "(0: any free port)",
        ),
        (
            "upload: {bandwidthLimit: 12QB}",
            "daemon.yaml: upload.bandwidthLimit: '12QB' is not a size like 20GiB, "
            "500MB or 1024",
        ),
        (
            "storage: {capacity: -5}",
            "daemon.yaml: storage.capacity: -5 is not allowed; it must be more than 0",
        ),
        (
            "download: {concurrentPieceCount: eight}",
            "daemon.yaml: download.concurrentPieceCount: expected a whole number, "
            "got 'eight'",
        ),
        (
            "download: {concurrentPieceCount: 1000}",
            "daemon.yaml: download.concurrentPieceCount: 1000 is out of range; "
            "allowed: 1 to 256",
        ),
        (
            "download: {pieceTimeout: soon}",
            "daemon.yaml: download.pieceTimeout: 'soon' is not a duration like 30s, "
            "5m, 24h or 500ms",
        ),
        (
            "seedPeer: {enable: 'yes'}",
            "daemon.yaml: seedPeer.enable: expected true or false, got 'yes'",
        ),
        (
            "host: {ip: 5}",
            "daemon.yaml: host.ip: expected a string, got 5 (quote it)",
        ),
        (
            "upload: {server: {transport: quic}}",
            "daemon.yaml: upload.server.transport: 'quic' is not allowed; allowed: "
            "tcp, http",
        ),
        (
            "scheduler: {addr: scheduler}",
            "daemon.yaml: scheduler.addr: 'scheduler' is not an address; allowed: "
            "HOST:PORT",
        ),
        (
            "proxy: {registries: [https://ok.example, 'ftp://nope']}",
            "daemon.yaml: proxy.registries[1]: 'ftp://nope' is not a registry URL "
            "like https://host[:port]",
        ),
        (
            "proxy: {rules: blobs}",
            "daemon.yaml: proxy.rules: expected a list, got 'blobs'",
        ),
        (
            "proxy: {rules: [{}]}",
            "daemon.yaml: proxy.rules[0].regex: missing; this key is required",
        ),
        (
            "proxy: {rules: [{regex: x, useTLS: true}]}",
            "daemon.yaml: proxy.rules[0].useTLS: unknown key; allowed here: regex",
        ),
        (
            "scheduler: 3",
            "daemon.yaml: scheduler: expected a mapping of addr, fallbackAfter, got 3",
        ),
        (
            "gc: {policy: {diskLowThresholdPercent: 95}}",
            "daemon.yaml: gc.policy.diskLowThresholdPercent: 95 must be less than "
            "diskHighThresholdPercent (90)",
        ),
        (
            "log: {level: loud}",
            "daemon.yaml: log.level: 'loud' is not allowed; allowed: debug, info, "
            "warning, error",
        ),
        ("- 1", "daemon.yaml: expected a mapping of keys, got [1]"),
        ("proxy: [", "daemon.yaml: line 1, column 9: expected the node content"),
        ("log: {}\nlog: {}\n", "daemon.yaml: line 2, column 1: 'log' is given twice"),
        ("? [a]\n: 1\n", "daemon.yaml: line 1, column 3: found unhashable key"),
    ],
)
def test_a_mistake_is_named_by_file_key_path_and_what_is_allowed(
    tmp_path: Path, text: str, message: str
) -> None:
    assert problem(tmp_path, text).startswith(message)


def test_a_scheduler_whose_hosts_would_expire_between_announces(
    tmp_path: Path,
) -> None:
    message = problem(tmp_path, "gc: {hostTTL: 2s}", SchedulerSettings)
    assert message == (
        "daemon.yaml: gc.hostTTL: 2s must be longer than "
        "scheduler.announceInterval (5s), or hosts expire between announces"
    )


def test_every_mistake_of_a_file_is_reported_one_per_line(tmp_path: Path) -> None:
    message = problem(tmp_path, "host: {ip: 5}\nupload: {server: {port: -1}}\n")
    assert message.splitlines() == [
        "daemon.yaml: host.ip: expected a string, got 5 (quote it)",
        "daemon.yaml: upload.server.port: -1 is not a port; allowed: 0 to 65535 "
        "(0: any free port)",
    ]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml: cannot read it"):
        load(DaemonSettings, tmp_path / "nothere.yaml")


def test_a_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# Overrides: options over variables over the file


def test_variables_override_the_file_and_options_override_variables(
    tmp_path: Path,
) -> None:
    file = write(tmp_path, "upload: {server: {port: 5000}}\nhost: {idc: file}\n")
    variables = environment(
        DaemonSettings,
        {"DRAGONPY_UPLOAD_SERVER_PORT": "6000", "DRAGONPY_HOST_IDC": "variable"},
    )
    option = Override("upload.server.port", 7000, "--piece-port")

    assert load(DaemonSettings, file).upload.server.port == 5000
    assert load(DaemonSettings, file, variables).upload.server.port == 6000
    settings = load(DaemonSettings, file, [*variables, option])
    assert (settings.upload.server.port, settings.host.idc) == (7000, "variable")


def test_variables_are_read_as_yaml_except_for_strings() -> None:
    settings = load(
        DaemonSettings,
        None,
        environment(
            DaemonSettings,
            {
                "DRAGONPY_SEED_PEER_ENABLE": "true",
                "DRAGONPY_PROXY_RULES": "[{regex: x}, {regex: 'a{1,2}'}]",
                "DRAGONPY_UPLOAD_BANDWIDTH_LIMIT": "1GiB",
                "DRAGONPY_HOST_HOSTNAME": "123",
                "DRAGONPY_STORE": "/srv/store",
                "DRAGONPY_STORE_CAPACITY": "1TB",
                "DRAGONPY_LOG_LEVEL": "debug",
            },
        ),
    )

    assert settings.seed_peer.enable
    assert [rule.regex for rule in settings.proxy.rules] == ["x", "a{1,2}"]
    assert settings.upload.bandwidth_limit == GIB
    assert settings.host.hostname == "123"
    assert settings.storage.dir == Path("/srv/store")
    assert settings.storage.capacity == 10**12
    assert settings.log.level == "debug"


def test_a_bad_value_names_the_variable_or_option_it_came_from(
    tmp_path: Path,
) -> None:
    file = write(tmp_path, "download: {concurrentPieceCount: 9}\n")
    overrides = [
        *environment(DaemonSettings, {"DRAGONPY_PROXY_RULES": "[{regex: '('}]"}),
        Override("upload.bandwidthLimit", "fast", "--upload-rate"),
    ]
    with pytest.raises(ConfigError) as raised:
        load(DaemonSettings, file, overrides)

    lines = str(raised.value).splitlines()
    assert lines[0] == (
        "--upload-rate: upload.bandwidthLimit: 'fast' is not a size like 20GiB, "
        "500MB or 1024"
    )
    assert lines[1].startswith(
        "DRAGONPY_PROXY_RULES: proxy.rules[0].regex: '(' is not a regular expression"
    )


def test_a_variable_that_is_not_yaml_is_named() -> None:
    with pytest.raises(ConfigError, match=r"DRAGONPY_PROXY_RULES: proxy\.rules: "):
        environment(DaemonSettings, {"DRAGONPY_PROXY_RULES": "[x"})


def test_every_key_has_its_own_variable_and_help() -> None:
    for kind in KINDS.values():
        names = [key.env for key in keys(kind)]
        assert len(names) == len(set(names))
        assert all(key.setting.help for key in keys(kind))


# Units


@given(st.integers(min_value=0, max_value=2**62))
def test_sizes_are_written_back_exactly(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_durations_are_written_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_sizes_and_durations_are_written_the_short_way() -> None:
    assert [format_size(n) for n in (20 * GIB, 100_000_000, 1000, 1023)] == [
        "20GiB",
        "100MB",
        "1KB",
        "1023",
    ]
    assert [format_duration(s) for s in (7 * 86400, 90, 0.25, 15)] == [
        "7d",
        "90s",
        "250ms",
        "15s",
    ]


# The default file


@pytest.mark.parametrize("name", list(KINDS))
def test_the_default_file_loads_back_to_the_defaults(tmp_path: Path, name: str) -> None:
    kind = KINDS[name]
    text = default_file(kind, name)

    assert load(kind, write(tmp_path, text)) == kind()
    for key in keys(kind):
        assert f"{key.path.rpartition('.')[2]}:" in text


# Reloading


def test_a_reload_takes_rules_and_limits_and_names_the_rest(tmp_path: Path) -> None:
    running = load(DaemonSettings)
    new = load(
        DaemonSettings,
        write(
            tmp_path,
            "proxy: {rules: [{regex: x}]}\nupload: {bandwidthLimit: 1MB, "
            "server: {port: 1}}\nstorage: {capacity: 1GiB}\nlog: {level: debug}\n",
        ),
    )

    merged, needs_restart = take_reloadable(running, new)

    assert [rule.regex for rule in merged.proxy.rules] == ["x"]
    assert merged.upload.bandwidth_limit == 1_000_000
    assert merged.log.level == "debug"
    assert merged.upload.server.port == running.upload.server.port
    assert merged.storage == running.storage
    assert needs_restart == ["upload.server.port", "storage.capacity"]
    assert changed(running, merged) == [
        "log.level",
        "upload.bandwidthLimit",
        "proxy.rules",
    ]


# Logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


SECRET_LINE = (
    "%s through the swarm failed (%s); passing it",
    "https://alice:s3cret@registry.example/v2/app/blobs/sha256:ab?token=t0ken",
    "upstream said 401 to Authorization: Bearer eyJhbGciOi.payload.sig",
)


@pytest.mark.parametrize("format", ["text", "json"])
@pytest.mark.usefixtures("restore_logging")
def test_credentials_never_reach_the_log(
    capsys: pytest.CaptureFixture[str], format: str
) -> None:
    configure_logging("info", format)
    logging.getLogger("dragonpy.proxy").info(*SECRET_LINE)

    line = capsys.readouterr().err
    assert "registry.example/v2/app/blobs" in line
    for secret in ("alice", "s3cret", "t0ken", "eyJhbGciOi"):
        assert secret not in line


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_one_object_per_line_with_their_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("debug", "json")
    log = logging.getLogger("dragonpy.daemon")
    log.info("served %s", "blob", extra={"task_id": "t1", "bytes_peer": 42})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")

    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert set(first) == {"time", "level", "logger", "message", "task_id", "bytes_peer"}
    assert (first["level"], first["logger"], first["message"]) == (
        "INFO",
        "dragonpy.daemon",
        "served blob",
    )
    assert (first["task_id"], first["bytes_peer"]) == ("t1", 42)
    assert "RuntimeError: boom" in second["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_text_logs_end_with_their_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    logging.getLogger("dragonpy").info("served", extra={"peer_id": "p1"})

    assert capsys.readouterr().err.rstrip().endswith("INFO dragonpy served peer_id=p1")


def test_redaction_keeps_what_is_not_secret() -> None:
    text = "GET https://registry.example/v2/x?n=1&digest=sha256:ab from a@b.example"
    assert redact(text) == text
