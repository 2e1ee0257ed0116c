"""Small but real OCI images, pushed to a test registry.

``push_image`` builds layers that are gzip-compressed tar archives of real files
(so containerd can unpack them), an image config whose ``rootfs.diff_ids`` are
the digests of the uncompressed archives, and an OCI image manifest naming them
all (OCI image spec, "Image Manifest" and "Image Configuration"). Like
``registry``, this module does not import pytest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
from dataclasses import dataclass
from typing import Final

from .registry import Registry

__all__ = ["MANIFEST_TYPE", "Image", "Layer", "build_layer", "push_image"]

MIB: Final = 1024 * 1024
MANIFEST_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE: Final = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
# Go's names for the machine, which containerd and skopeo match images against.
_GO_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    """One layer blob: the compressed bytes the registry stores, and what they
    unpack to."""

    digest: str
    data: bytes
    diff_id: str
    files: dict[str, bytes]


@dataclass(frozen=True)
class Image:
    """An image in a registry, with all it was built from."""

    host: str
    repo: str
    tag: str
    digest: str
    manifest: bytes
    config_digest: str
    config: bytes
    layers: tuple[Layer, ...]

    @property
    def reference(self) -> str:
        """``host:port/repo:tag``, as clients name the image."""
        return f"{self.host}/{self.repo}:{self.tag}"

    @property
    def size(self) -> int:
        """Bytes of all blobs the manifest names: the config and the layers."""
        return len(self.config) + sum(len(layer.data) for layer in self.layers)

    def files(self) -> dict[str, bytes]:
        """Every file of the unpacked image, by path."""
        return {
            name: data for layer in self.layers for name, data in layer.files.items()
        }


def build_layer(number: int, size: int, files: int = 3) -> Layer:
    """A layer of ``files`` random files, ``size`` bytes in all, in a directory
    ``layer<number>``."""
    contents = {
        f"layer{number}/file{index}.bin": os.urandom(size // files)
        for index in range(files)
    }
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(f"layer{number}")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        for name, data in contents.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            entry.mode = 0o644
            tar.addfile(entry, io.BytesIO(data))
    uncompressed = archive.getvalue()
    # Random bytes do not shrink; level 1 keeps the work small.
    compressed = gzip.compress(uncompressed, compresslevel=1, mtime=0)
    return Layer(sha256(compressed), compressed, sha256(uncompressed), contents)


def _config(layers: tuple[Layer, ...]) -> bytes:
    machine = platform.machine()
    config = {
        "architecture": _GO_ARCH.get(machine, machine),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"layer {n}"} for n in range(len(layers))],
    }
    return json.dumps(config, separators=(",", ":")).encode()


def push_image(
    registry: Registry,
    repo: str = "team/app",
    tag: str = "v1",
    *,
    layers: int = 3,
    layer_size: int = 3 * MIB,
) -> Image:
    """Build an image of ``layers`` layers and push it to ``registry`` as
    ``repo:tag``."""
    built = tuple(build_layer(n, layer_size) for n in range(layers))
    for layer in built:
        registry.push_blob(repo, layer.data)

    config = _config(built)
    config_digest = registry.push_blob(repo, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": LAYER_TYPE,
                    "digest": layer.digest,
                    "size": len(layer.data),
                }
                for layer in built
            ],
        }
    ).encode()
    digest = registry.push_manifest(repo, tag, manifest, MANIFEST_TYPE)
    return Image(
        registry.host, repo, tag, digest, manifest, config_digest, config, built
    )
