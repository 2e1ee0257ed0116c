"""``dragonpy get`` of OCI blobs and manifests from a real docker-registry."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import dragonpy
from dragonpy_cli._app import cli

from .images import push_image
from .registry import PASSWORD, USERNAME, Registry, run_registry

pytestmark = pytest.mark.registry


def get(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["get", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[Registry]:
    with run_registry(tmp_path, auth="token") as registry:
        yield registry


def test_blob_by_oci_url_with_token_auth(
    token_registry: Registry, tmp_path: Path
) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)
    digest = token_registry.push_blob("team/app", data)
    store = str(tmp_path / "s")

    code, stdout, stderr = get(
        f"oci://{token_registry.host}/team/app@{digest}",
        "-O", str(tmp_path / "blob"), "--store", store,
        "-u", f"{USERNAME}:{PASSWORD}", "--json",
    )  # fmt: skip

    assert code == 0, stderr
    assert (tmp_path / "blob").read_bytes() == data
    result = json.loads(stdout)
    assert result["digest"] == digest
    assert result["task_id"] == digest.partition(":")[2]


def test_blob_by_registry_api_url_shares_the_task(
    token_registry: Registry, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    digest = token_registry.push_blob("team/app", data)
    store = str(tmp_path / "s")
    user = f"{USERNAME}:{PASSWORD}"
    oci = f"oci://{token_registry.host}/team/app@{digest}"
    api = f"{token_registry.url}/v2/team/app/blobs/{digest}"

    assert get(oci, "-O", str(tmp_path / "a"), "--store", store, "-u", user)[0] == 0
    code, stdout, _ = get(api, "-O", str(tmp_path / "b"), "--store", store, "--json")

    # Same digest, same task: the second download comes from the store, no login.
    assert code == 0
    assert json.loads(stdout)["bytes_from_origin"] == 0
    assert (tmp_path / "b").read_bytes() == data


def test_missing_credentials_are_an_auth_error(
    token_registry: Registry, tmp_path: Path
) -> None:
    digest = token_registry.push_blob("team/app", b"secret layer")
    code, _, stderr = get(
        f"oci://{token_registry.host}/team/app@{digest}",
        "-O", str(tmp_path / "f"), "--store", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == dragonpy.OriginAuthError.exit_code
    assert "401" in stderr
    assert not (tmp_path / "f").exists()


def test_manifest_by_tag_anonymous(tmp_path: Path) -> None:
    with run_registry(tmp_path) as registry:
        manifest = push_image(registry, "library/tool", "v1", layers=0).manifest

        code, _, stderr = get(
            f"oci://{registry.host}/library/tool:v1",
            "-O", str(tmp_path / "manifest.json"), "--store", str(tmp_path / "s"),
        )  # fmt: skip

    assert code == 0, stderr
    assert (tmp_path / "manifest.json").read_bytes() == manifest
