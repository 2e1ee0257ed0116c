"""``dragonpy containerd-config`` writes hosts.toml files containerd can read."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner

from dragonpy_cli._app import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["containerd-config", *args])
    return result.exit_code, result.stdout, result.stderr


def test_each_registry_pulls_through_the_mirror_with_its_name(tmp_path: Path) -> None:
    code, _, _ = run(
        "--hosts-dir", str(tmp_path), "docker.io", "127.0.0.1:5000", "--default"
    )

    assert code == 0
    hub = tomllib.loads((tmp_path / "docker.io" / "hosts.toml").read_text())
    assert hub["server"] == "https://registry-1.docker.io"
    mirror = hub["host"]["http://127.0.0.1:4001"]
    assert mirror["capabilities"] == ["pull", "resolve"]
    assert mirror["header"]["X-Dragonfly-Registry"] == ["https://registry-1.docker.io"]
    local = tomllib.loads((tmp_path / "127.0.0.1:5000" / "hosts.toml").read_text())
    assert local["server"] == "http://127.0.0.1:5000"  # loopback: plain HTTP
    default = tomllib.loads((tmp_path / "_default" / "hosts.toml").read_text())
    assert "server" not in default
    assert "header" not in default["host"]["http://127.0.0.1:4001"]


def test_what_was_there_is_kept(tmp_path: Path) -> None:
    existing = tmp_path / "ghcr.io" / "hosts.toml"
    existing.parent.mkdir()
    existing.write_text('server = "https://ghcr.io"\n')

    code, _, stderr = run("--hosts-dir", str(tmp_path), "ghcr.io")
    again, _, _ = run("--hosts-dir", str(tmp_path), "ghcr.io")

    assert code == again == 0
    backups = list(existing.parent.glob("hosts.toml.*.bak"))
    assert [backup.read_text() for backup in backups] == [
        'server = "https://ghcr.io"\n'
    ]
    assert "kept the previous" in stderr
    assert "X-Dragonfly-Registry" in existing.read_text()


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    code, stdout, _ = run("--hosts-dir", str(tmp_path), "--dry-run", "quay.io")

    assert code == 0
    assert list(tmp_path.iterdir()) == []
    assert f"# {tmp_path}/quay.io/hosts.toml" in stdout
    assert 'server = "https://quay.io"' in stdout


def test_bad_names_are_refused(tmp_path: Path) -> None:
    assert run("--hosts-dir", str(tmp_path))[0] == 2
    code, _, stderr = run("--hosts-dir", str(tmp_path), "ftp://registry")
    assert code == 2 and "not a registry URL" in stderr
    code, _, stderr = run("--mirror", "nonsense://x", "docker.io")
    assert code == 2 and "--mirror" in stderr
