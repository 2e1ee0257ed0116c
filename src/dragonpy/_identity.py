"""Identifiers: task IDs, host IDs and peer IDs.

Task IDs follow Dragonfly's rule so that the same URL gives the same ID in both
systems: sha256 over the normalized URL, then the tag, the application and an explicit
piece length when given, then the task type. OCI blob URLs are content addressed
instead: their task ID is the blob digest, so one blob pulled through any registry,
repository or mirror is one task.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Final

import ada_url

from ._errors import UnsupportedURL

#: Query parameters that sign or scope a URL without changing its content (S3, GCS,
#: OSS, OBS, COS signatures and containerd's ``ns``). They never enter a task ID.
DEFAULT_FILTERED_QUERY_PARAMS: Final = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-User-Agent",
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-SignedHeaders",
    "X-Goog-Signature",
    "OSSAccessKeyId",
    "Expires",
    "Signature",
    "SecurityToken",
    "AccessKeyId",
    "X-Obs-Date",
    "X-Obs-Security-Token",
    "q-sign-algorithm",
    "q-ak",
    "q-sign-time",
    "q-key-time",
    "q-header-list",
    "q-url-param-list",
    "q-signature",
    "x-cos-security-token",
    "ns",
)

_TASK_TYPE: Final = "STANDARD"

# An OCI distribution blob URL, <scheme>://<host>/v2/<name>/blobs/<digest>[?query],
# or an oci:// blob reference: oci://<host>/<name>@<digest>, .../<name>/blobs/<digest>.
_BLOB_URL: Final = re.compile(
    r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://[^/]+/v2/.+/blobs/([^/?#]+)"
    r"|oci://[^/]+/[^@?#]+(?:@|/blobs/)([^/?#]+)$)"
)
_DIGEST: Final = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def normalize_url(
    url: str, filtered_query_params: tuple[str, ...] = DEFAULT_FILTERED_QUERY_PARAMS
) -> str:
    """Return the WHATWG serialization of ``url`` without the filtered parameters.

    The remaining query is re-encoded as ``application/x-www-form-urlencoded``, and a
    root path with no query or fragment loses its trailing slash, as Dragonfly does.
    """
    try:
        parsed = ada_url.URL(url)
    except ValueError as exc:
        raise UnsupportedURL(f"not a valid URL: {url!r}") from exc

    if parsed.search:
        params = ada_url.URLSearchParams(parsed.search)
        for key in filtered_query_params:
            params.delete(key)
        parsed.search = str(params) if params.size else ""

    href: str = parsed.href
    if parsed.pathname == "/" and href.endswith("/"):
        href = href[:-1]
    return href


def blob_digest(url: str) -> str | None:
    """The ``algorithm:hex`` digest of an OCI blob URL, or None for other URLs."""
    match = _BLOB_URL.match(url)
    if match is None:
        return None
    digest = match.group(1) or match.group(2)
    return digest if _DIGEST.match(digest) else None


def task_id(
    url: str,
    *,
    tag: str = "",
    application: str = "",
    piece_length: int | None = None,
    filtered_query_params: tuple[str, ...] = DEFAULT_FILTERED_QUERY_PARAMS,
) -> str:
    """The task ID of a download: equal IDs mean equal content."""
    digest = blob_digest(url)
    if digest is not None:
        return task_id_of_digest(digest)

    parts = [normalize_url(url, filtered_query_params), tag, application]
    if piece_length is not None:
        parts.append(str(piece_length))
    parts.append(_TASK_TYPE)
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def task_id_of_digest(digest: str) -> str:
    """The task ID of content known by its OCI digest.

    A sha256 digest is used as it is; longer digests are hashed down so that every
    task ID has the same 64-character shape.
    """
    algorithm, _, encoded = digest.partition(":")
    if algorithm == "sha256":
        return encoded
    return hashlib.sha256(digest.encode()).hexdigest()


def host_id(ip: str, hostname: str, *, seed: bool = False) -> str:
    """A host's ID: stable across restarts of the daemon on that host."""
    return f"{ip}-{hostname}-seed" if seed else f"{ip}-{hostname}"


def peer_id(ip: str, hostname: str, *, seed: bool = False) -> str:
    """A new peer ID: one per download of a task on a host."""
    base = f"{ip}-{hostname}-{uuid.uuid4()}"
    return f"{base}-seed" if seed else base
