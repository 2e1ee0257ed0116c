"""The ``oci://`` URL scheme: a registry blob or manifest named by URL.

``oci://HOST[:PORT]/REPO/blobs/DIGEST`` (or ``REPO@DIGEST``) names a blob and
``oci://HOST[:PORT]/REPO/manifests/REF`` (or ``REPO:TAG``) a manifest. They map onto
the registry API of the OCI distribution spec ("Pulling blobs", "Pulling
manifests"), so the HTTP backend can fetch them like any other URL.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from typing import Final, Literal
from urllib.parse import SplitResult, urlsplit

import attrs

from .._errors import UnsupportedURL

__all__ = ["MANIFEST_ACCEPT", "OciReference", "resolve_oci_url"]

#: Every manifest media type dragonpy can hand on. Registries pick the format by
#: Accept and fall back to a legacy schema without it (OCI distribution spec,
#: "Pulling manifests"), so all four are listed, indexes first.
MANIFEST_ACCEPT: Final[str] = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

_FORMS: Final = (
    "accepted forms: oci://HOST[:PORT]/REPO/blobs/DIGEST,"
    " oci://HOST[:PORT]/REPO@DIGEST,"
    " oci://HOST[:PORT]/REPO/manifests/TAG_OR_DIGEST, oci://HOST[:PORT]/REPO:TAG"
)
# OCI distribution spec, "Pulling manifests": the <name> grammar.
_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# Clients commonly cap names at 255 characters (OCI distribution spec, "Pulling
# manifests"); distribution's reference package enforces the same.
_NAME_MAX: Final = 255
_DIGEST_RE: Final = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_LONG_FORM_RE: Final = re.compile(
    r"(?:(?P<repo>.*)/)?(?P<kind>blobs|manifests)/(?P<ref>[^/]*)"
)
_HOST_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


@attrs.frozen
class OciReference:
    """Where the registry API serves what an ``oci://`` URL names.

    ``accept`` is the Accept header a manifest request needs (None for blobs);
    ``digest`` is set when the URL pins the content, so it can be verified.
    """

    http_url: str
    accept: str | None
    digest: str | None
    kind: Literal["blob", "manifest"]


def resolve_oci_url(
    url: str, *, plain_http_hosts: Collection[str] = ()
) -> OciReference:
    """Map an ``oci://`` URL to its registry API URL; raise UnsupportedURL if bad.

    Loopback registries and ``plain_http_hosts`` (``host:port`` or bare host) are
    spoken to over plain HTTP, like Docker's insecure-registry rule; the rest over
    HTTPS.
    """
    parts = _split(url)
    netloc = _netloc(parts, url)
    kind, repository, reference = _parse_path(parts.path, url)
    _check_repository(repository, url)
    scheme = "http" if _is_plain_http(parts, netloc, plain_http_hosts) else "https"
    http_url = f"{scheme}://{netloc}/v2/{repository}/{kind}s/{reference}"
    digest = reference if _DIGEST_RE.fullmatch(reference) else None
    accept = MANIFEST_ACCEPT if kind == "manifest" else None
    return OciReference(http_url=http_url, accept=accept, digest=digest, kind=kind)


def _fail(problem: str, url: str | None) -> UnsupportedURL:
    where = f" in {url!r}" if url is not None else ""
    return UnsupportedURL(f"{problem}{where}; {_FORMS}")


def _split(url: str) -> SplitResult:
    """Split ``url``, refusing what an ``oci://`` URL cannot carry."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _fail(f"malformed URL ({exc})", url) from exc
    if parts.scheme != "oci":
        raise _fail(f"scheme must be oci://, not {parts.scheme or 'missing'}", url)
    if "@" in parts.netloc:
        # Echoing the URL would echo the password it carries.
        raise _fail("credentials in the URL are not supported; pass them apart", None)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _fail("query or fragment not allowed", url)
    return parts


def _netloc(parts: SplitResult, url: str) -> str:
    """The registry's ``host[:port]``, normalised to lower case."""
    host = (
        parts.netloc.rpartition(":")[0] if _has_port(parts) else parts.netloc
    ).lower()
    if not host:
        raise _fail("registry host is missing", url)
    if not _HOST_RE.fullmatch(host):
        raise _fail(f"bad registry host {host!r}", url)
    try:
        port = parts.port
    except ValueError as exc:
        raise _fail("bad registry port", url) from exc
    if _has_port(parts) and port is None:
        raise _fail("bad registry port", url)
    return host if port is None else f"{host}:{port}"


def _has_port(parts: SplitResult) -> bool:
    return ":" in parts.netloc.rpartition("]")[2]


def _parse_path(path: str, url: str) -> tuple[Literal["blob", "manifest"], str, str]:
    """Split the path into kind, repository and tag or digest."""
    rest = path[1:]
    if not rest:
        raise _fail("repository is missing", url)
    if long_form := _LONG_FORM_RE.fullmatch(rest):
        repository = long_form.group("repo") or ""
        reference = long_form.group("ref")
        if long_form.group("kind") == "blobs":
            return "blob", repository, _check_digest(reference, url)
        return "manifest", repository, _check_reference(reference, url)
    if "@" in rest:
        repository, _, digest = rest.rpartition("@")
        return "blob", repository, _check_digest(digest, url)
    if ":" in rest.rpartition("/")[2]:
        repository, _, tag = rest.rpartition(":")
        return "manifest", repository, _check_tag(tag, url)
    raise _fail("no tag, digest, /blobs/ or /manifests/ part", url)


def _check_repository(repository: str, url: str) -> None:
    if not repository:
        raise _fail("repository is missing", url)
    if len(repository) > _NAME_MAX:
        raise _fail(f"repository name longer than {_NAME_MAX} characters", url)
    if not _NAME_RE.fullmatch(repository):
        raise _fail(
            f"bad repository name {repository!r} (lower-case letters, digits,"
            " separators . _ __ - between them, components joined by /)",
            url,
        )


def _check_digest(digest: str, url: str) -> str:
    if not _DIGEST_RE.fullmatch(digest):
        raise _fail(
            f"bad digest {digest!r} (sha256: and 64 or sha512: and 128 lower-case"
            " hex digits)",
            url,
        )
    return digest


def _check_tag(tag: str, url: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise _fail(f"bad tag {tag!r} (up to 128 of A-Z a-z 0-9 _ . -)", url)
    return tag


def _check_reference(reference: str, url: str) -> str:
    """A manifest reference is a digest when it looks like one, else a tag."""
    if ":" in reference:
        return _check_digest(reference, url)
    return _check_tag(reference, url)


def _is_plain_http(
    parts: SplitResult, netloc: str, plain_http_hosts: Collection[str]
) -> bool:
    """Docker's insecure-registry rule: loopback, or listed by the user."""
    hostname = parts.hostname or ""
    if is_loopback(hostname):
        return True
    bracketed = netloc.rpartition(":")[0] if _has_port(parts) else netloc
    candidates = {netloc, bracketed, hostname}
    return any(entry.strip().lower() in candidates for entry in plain_http_hosts)


def is_loopback(hostname: str) -> bool:
    """``localhost`` or a loopback address: registries there speak plain HTTP."""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
