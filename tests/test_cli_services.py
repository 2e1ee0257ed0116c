"""Bad command lines for the long-lived services: refused at once, saying why."""

from __future__ import annotations

from click.testing import CliRunner

from dragonpy_cli._app import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_scheduler_whose_hosts_would_expire_between_announces_is_refused() -> None:
    code, output = run("scheduler", "--keepalive", "5", "--host-ttl", "2")
    assert code == 2
    assert "--host-ttl: gc.hostTTL" in output and "announceInterval (5s)" in output


def test_a_daemon_with_an_unknown_transport_is_refused() -> None:
    code, output = run("daemon", "--transport", "quic")
    assert code == 2
    assert "quic" in output and "tcp" in output


def test_a_daemon_with_a_nonsense_upload_rate_is_refused() -> None:
    code, output = run("daemon", "--upload-rate", "fast")
    assert code == 2
    assert "'fast' is not a size" in output


def test_a_daemon_port_out_of_range_is_refused() -> None:
    code, output = run("daemon", "--piece-port", "70000")
    assert code == 2
    assert "70000" in output


def test_a_daemon_with_a_zero_upload_rate_is_refused() -> None:
    code, output = run("daemon", "--upload-rate", "0")
    assert code == 2
    assert "--upload-rate: upload.bandwidthLimit: 0 is not allowed" in output
