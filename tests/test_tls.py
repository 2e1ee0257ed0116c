"""The TLS client context: the system's CA certificates are loaded by the first
handshake, not before (verification itself: ``test_get.py``'s TLS test)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from pathlib import Path

from dragonpy._tls import _SystemCertificatesOnFirstUse, client_context


def system_certificates() -> int:
    return ssl.create_default_context().cert_store_stats()["x509_ca"]


def test_the_first_handshake_loads_the_system_certificates() -> None:
    assert system_certificates() > 0  # else nothing below could tell
    by_bio = _SystemCertificatesOnFirstUse.made()
    by_socket = _SystemCertificatesOnFirstUse.made()
    assert by_bio.cert_store_stats()["x509_ca"] == 0

    by_bio.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="origin.test")
    with (
        socket.socket() as unconnected,
        by_socket.wrap_socket(
            unconnected, server_hostname="origin.test", do_handshake_on_connect=False
        ),
    ):
        pass

    for context in (by_bio, by_socket):
        assert context.cert_store_stats()["x509_ca"] == system_certificates()
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_unverified_context_needs_no_certificates() -> None:
    unverified = client_context(verify=False)

    assert unverified.verify_mode == ssl.CERT_NONE and not unverified.check_hostname
    assert unverified.cert_store_stats()["x509_ca"] == 0
    assert client_context(verify=False) is unverified


def test_a_plain_http_download_loads_no_certificates(
    nginx: str, tmp_path: Path
) -> None:
    script = (
        "import sys, dragonpy\n"
        "from dragonpy._tls import client_context\n"
        f"dragonpy.download_sync({nginx + '/small.bin'!r}, sys.argv[1], "
        "store_dir=sys.argv[2])\n"
        "print(client_context().cert_store_stats()['x509_ca'])\n"
    )
    argv = [sys.executable, "-c", script, str(tmp_path / "o"), str(tmp_path / "s")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert (tmp_path / "o").stat().st_size == 1000
