from __future__ import annotations

import hashlib

import pytest

from dragonpy import (
    UnsupportedURL,
    blob_digest,
    host_id,
    normalize_url,
    peer_id,
    task_id,
)

BLOB = "sha256:" + "ab" * 32


# Dragonfly's published task ID vectors (its id_generator tests), where our rule is
# the same: URL, then tag, application and an explicit piece length, then the type.
@pytest.mark.parametrize(
    ("url", "kwargs", "expected"),
    [
        (
            "https://example.com",
            {"tag": "foo", "application": "bar"},
            "06408fbf247ddaca478f8cb9565fe5591c28efd0994b8fea80a6a87d3203c5ca",
        ),
        (
            "https://example.com",
            {"piece_length": 1024},
            "9f7c9aafbc6f30f8f41a96ca77eeae80c5b60964b3034b0ee43ccf7b2f9e52b8",
        ),
        (
            "https://example.com?foo=foo&bar=bar",
            {"filtered_query_params": ("foo", "bar")},
            "457b4328cde278e422c9e243f7bfd1e97f511fec43a80f535cf6b0ef6b086776",
        ),
    ],
)
def test_task_id_matches_dragonfly_vectors(
    url: str, kwargs: dict[str, object], expected: str
) -> None:
    assert task_id(url, **kwargs) == expected  # type: ignore[arg-type]


def test_signed_query_parameters_do_not_change_the_task_id() -> None:
    plain = task_id("https://bucket.example/model.bin")
    signed = task_id(
        "https://bucket.example/model.bin?X-Amz-Signature=abc&X-Amz-Date=20260101"
    )
    assert signed == plain


def test_other_query_parameters_do_change_the_task_id() -> None:
    assert task_id("https://h/f?v=1") != task_id("https://h/f?v=2")


def test_normalization_follows_whatwg() -> None:
    url = "HTTPS://Example.COM:443/a/../b?ns=docker.io&y=a%20b#frag"
    assert normalize_url(url) == "https://example.com/b?y=a+b#frag"
    assert normalize_url("https://example.com/") == "https://example.com"


def test_tag_and_application_separate_tasks() -> None:
    assert task_id("https://h/f", tag="a") != task_id("https://h/f", tag="b")
    assert task_id("https://h/f", application="x") != task_id("https://h/f")


def test_blob_urls_are_identified_by_their_digest() -> None:
    one = f"https://registry-1.example/v2/library/alpine/blobs/{BLOB}"
    other = f"http://mirror.local:5000/v2/team/app/blobs/{BLOB}?ns=docker.io"
    short = f"oci://registry.local:5000/team/app@{BLOB}"
    long = f"oci://registry.local/team/app/blobs/{BLOB}"
    assert blob_digest(one) == blob_digest(short) == blob_digest(long) == BLOB
    assert task_id(one) == task_id(other) == task_id(short) == "ab" * 32
    assert blob_digest("oci://registry.local/team/app:v1") is None


def test_sha512_blob_task_ids_keep_the_common_shape() -> None:
    digest = "sha512:" + "cd" * 64
    url = f"https://r/v2/a/blobs/{digest}"
    assert task_id(url) == hashlib.sha256(digest.encode()).hexdigest()


def test_manifest_and_malformed_blob_urls_are_not_blobs() -> None:
    assert blob_digest("https://r/v2/a/manifests/latest") is None
    assert blob_digest("https://r/v2/a/blobs/sha256:xyz") is None


def test_invalid_urls_are_rejected_with_the_url_named() -> None:
    with pytest.raises(UnsupportedURL, match="not a valid URL"):
        task_id("http://exa mple.com:99999/")


def test_host_and_peer_ids() -> None:
    assert host_id("10.0.0.1", "node-a") == "10.0.0.1-node-a"
    assert host_id("10.0.0.1", "node-a", seed=True) == "10.0.0.1-node-a-seed"
    first, second = peer_id("10.0.0.1", "node-a"), peer_id("10.0.0.1", "node-a")
    assert first != second
    assert first.startswith("10.0.0.1-node-a-")
    assert peer_id("10.0.0.1", "n", seed=True).endswith("-seed")
