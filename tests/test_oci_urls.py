"""resolve_oci_url: the accepted forms, the scheme rule, and every refusal."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dragonpy._backends._oci import MANIFEST_ACCEPT, OciReference, resolve_oci_url
from dragonpy._errors import UnsupportedURL

SHA256 = "sha256:" + hashlib.sha256(b"layer").hexdigest()
SHA512 = "sha512:" + hashlib.sha512(b"layer").hexdigest()


def test_manifest_accept_lists_all_four_media_types() -> None:
    assert MANIFEST_ACCEPT.split(", ") == [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"oci://ghcr.io/library/alpine/blobs/{SHA256}",
            OciReference(
                f"https://ghcr.io/v2/library/alpine/blobs/{SHA256}",
                None,
                SHA256,
                "blob",
            ),
        ),
        (
            f"oci://ghcr.io/library/alpine@{SHA256}",
            OciReference(
                f"https://ghcr.io/v2/library/alpine/blobs/{SHA256}",
                None,
                SHA256,
                "blob",
            ),
        ),
        (
            f"oci://reg.example:5000/a/b/c/blobs/{SHA512}",
            OciReference(
                f"https://reg.example:5000/v2/a/b/c/blobs/{SHA512}",
                None,
                SHA512,
                "blob",
            ),
        ),
        (
            "oci://ghcr.io/library/alpine/manifests/3.20",
            OciReference(
                "https://ghcr.io/v2/library/alpine/manifests/3.20",
                MANIFEST_ACCEPT,
                None,
                "manifest",
            ),
        ),
        (
            f"oci://ghcr.io/alpine/manifests/{SHA256}",
            OciReference(
                f"https://ghcr.io/v2/alpine/manifests/{SHA256}",
                MANIFEST_ACCEPT,
                SHA256,
                "manifest",
            ),
        ),
        (
            "oci://ghcr.io/my-org/my_app.v2:Latest_1.0-rc",
            OciReference(
                "https://ghcr.io/v2/my-org/my_app.v2/manifests/Latest_1.0-rc",
                MANIFEST_ACCEPT,
                None,
                "manifest",
            ),
        ),
        (
            "oci://REG.Example/org/blobs/app/manifests/v1",
            OciReference(
                "https://reg.example/v2/org/blobs/app/manifests/v1",
                MANIFEST_ACCEPT,
                None,
                "manifest",
            ),
        ),
    ],
)
def test_accepted_forms(url: str, expected: OciReference) -> None:
    assert resolve_oci_url(url) == expected


@pytest.mark.parametrize(
    ("host", "plain_http_hosts", "scheme"),
    [
        ("localhost", (), "http"),
        ("localhost:5000", (), "http"),
        ("127.0.0.1:5000", (), "http"),
        ("127.9.8.7", (), "http"),
        ("[::1]:5000", (), "http"),
        ("[::1]", (), "http"),
        ("registry.example", (), "https"),
        ("10.0.0.1:5000", (), "https"),
        ("registry.example:5000", ("registry.example:5000",), "http"),
        ("registry.example:5000", ("registry.example",), "http"),
        ("registry.example:5000", ("Registry.Example:5000",), "http"),
        ("registry.example:5000", ("registry.example:5001",), "https"),
        ("registry.example", ("registry.example:5000",), "https"),
        ("[fd00::1]:5000", ("[fd00::1]:5000",), "http"),
        ("[fd00::1]:5000", ("fd00::1",), "http"),
        ("localhost.example", (), "https"),
    ],
)
def test_scheme_follows_insecure_registry_rule(
    host: str, plain_http_hosts: tuple[str, ...], scheme: str
) -> None:
    reference = resolve_oci_url(
        f"oci://{host}/a:latest", plain_http_hosts=plain_http_hosts
    )
    assert reference.http_url == f"{scheme}://{host.lower()}/v2/a/manifests/latest"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("oci://ghcr.io/library/alpine", "no tag, digest"),
        ("oci://ghcr.io/library/alpine/", "no tag, digest"),
        (f"oci://ghcr.io/alpine/blobs/{SHA256}/", "no tag, digest"),
        ("oci://ghcr.io", "repository is missing"),
        ("oci://ghcr.io/", "repository is missing"),
        (f"oci://ghcr.io/@{SHA256}", "repository is missing"),
        (f"oci://ghcr.io//blobs/{SHA256}", "repository is missing"),
        (f"oci://ghcr.io/blobs/{SHA256}", "repository is missing"),
        ("oci://ghcr.io/:latest", "repository is missing"),
        (f"oci://ghcr.io/Library/alpine@{SHA256}", "bad repository name"),
        ("oci://ghcr.io/alpine-:latest", "bad repository name"),
        ("oci://ghcr.io/a//b:latest", "bad repository name"),
        ("oci://ghcr.io/a___b:latest", "bad repository name"),
        (f"oci://ghcr.io/a:v1@{SHA256}", "bad repository name"),
        ("oci://ghcr.io/" + "a" * 256 + ":latest", "longer than 255"),
        ("oci://ghcr.io/alpine@sha256:abc", "bad digest"),
        ("oci://ghcr.io/alpine@" + SHA256.upper(), "bad digest"),
        ("oci://ghcr.io/alpine@md5:" + "0" * 32, "bad digest"),
        ("oci://ghcr.io/alpine@" + SHA256 + "0", "bad digest"),
        ("oci://ghcr.io/alpine/blobs/latest", "bad digest"),
        ("oci://ghcr.io/alpine/blobs/", "bad digest"),
        ("oci://ghcr.io/alpine/manifests/sha256:abc", "bad digest"),
        ("oci://ghcr.io/alpine:-latest", "bad tag"),
        ("oci://ghcr.io/alpine:.hidden", "bad tag"),
        ("oci://ghcr.io/alpine:", "bad tag"),
        ("oci://ghcr.io/alpine:" + "t" * 129, "bad tag"),
        ("oci://ghcr.io/alpine/manifests/a+b", "bad tag"),
        ("oci://ghcr.io/alpine/manifests/", "bad tag"),
        ("https://ghcr.io/alpine:latest", "scheme must be oci://, not https"),
        ("docker://ghcr.io/alpine:latest", "scheme must be oci://"),
        ("ghcr.io/alpine:latest", "scheme must be oci://, not missing"),
        ("oci:///alpine:latest", "registry host is missing"),
        ("oci://:5000/alpine:latest", "registry host is missing"),
        ("oci://bad_host/alpine:latest", "bad registry host"),
        ("oci://ghcr.io:http/alpine:latest", "bad registry port"),
        ("oci://ghcr.io:99999/alpine:latest", "bad registry port"),
        ("oci://ghcr.io:/alpine:latest", "bad registry port"),
        ("oci://ghcr.io/alpine:latest?x=1", "query or fragment"),
        ("oci://ghcr.io/alpine:latest#frag", "query or fragment"),
        ("oci://ghcr.io/alpine:latest?", "query or fragment"),
        ("oci://[::1/alpine:latest", "malformed URL"),
    ],
)
def test_refusals_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(UnsupportedURL) as caught:
        resolve_oci_url(url)
    message = str(caught.value)
    assert problem in message
    assert "accepted forms: oci://HOST[:PORT]/REPO/blobs/DIGEST" in message
    assert "\n" not in message


def test_credentials_in_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(UnsupportedURL) as caught:
        resolve_oci_url("oci://alice:hunter2@ghcr.io/alpine:latest")
    assert "credentials in the URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


_COMPONENT = st.from_regex(
    r"[a-z0-9]{1,6}(?:(?:\.|_|__|-{1,2})[a-z0-9]{1,6}){0,2}", fullmatch=True
)
_REPOSITORY = st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True)
_DIGEST = st.binary(max_size=64).flatmap(
    lambda data: st.sampled_from(
        [
            "sha256:" + hashlib.sha256(data).hexdigest(),
            "sha512:" + hashlib.sha512(data).hexdigest(),
        ]
    )
)
_HOST = st.sampled_from(
    ["ghcr.io", "registry.example:5000", "localhost", "127.0.0.1:5000", "[::1]:443"]
)
# Shorthand URLs whose repository ends in ".../blobs/X" or ".../manifests/X" read
# as the long form; such repositories are reachable through the long form only.
_LOOKS_LONG = re.compile(r"(?:^|/)(?:blobs|manifests)/[^/]*$")


def _scheme(host: str) -> str:
    return "https" if host.startswith(("ghcr", "registry")) else "http"


@given(host=_HOST, repository=_REPOSITORY, digest=_DIGEST, short=st.booleans())
def test_blob_round_trip(host: str, repository: str, digest: str, short: bool) -> None:
    assume(not (short and _LOOKS_LONG.search(repository)))
    url = (
        f"oci://{host}/{repository}@{digest}"
        if short
        else (f"oci://{host}/{repository}/blobs/{digest}")
    )
    reference = resolve_oci_url(url)
    assert reference == OciReference(
        f"{_scheme(host)}://{host}/v2/{repository}/blobs/{digest}",
        None,
        digest,
        "blob",
    )


@given(host=_HOST, repository=_REPOSITORY, tag=_TAG, short=st.booleans())
def test_manifest_round_trip(host: str, repository: str, tag: str, short: bool) -> None:
    assume(not (short and _LOOKS_LONG.search(repository)))
    url = (
        f"oci://{host}/{repository}:{tag}"
        if short
        else (f"oci://{host}/{repository}/manifests/{tag}")
    )
    reference = resolve_oci_url(url)
    assert reference == OciReference(
        f"{_scheme(host)}://{host}/v2/{repository}/manifests/{tag}",
        MANIFEST_ACCEPT,
        None,
        "manifest",
    )


@given(rest=st.text(max_size=80))
def test_anything_else_is_resolved_or_refused(rest: str) -> None:
    """No input escapes as anything but UnsupportedURL."""
    try:
        reference = resolve_oci_url("oci://" + rest)
    except UnsupportedURL as refused:
        assert "\n" not in str(refused)
        return
    assert reference.http_url.startswith(("http://", "https://"))
    assert "/v2/" in reference.http_url
