"""TLS client settings, made once per process and setting.

Loading the system's CA certificates takes 20 to 60 ms on a small machine, and an
httpx client given no context loads its own: a daemon has several clients, and every
start of a daemon or of ``dragonpy get`` paid for each of them. The verifying
context made here loads them on its first TLS connection, so a process that only
speaks plain HTTP (a download from an ``http://`` origin, a daemon talking to its
scheduler) never does. A CA file given explicitly is loaded at once, so that a bad
one is reported where it was given.
"""

from __future__ import annotations

import functools
import ssl
import threading
from typing import Any


class _SystemCertificatesOnFirstUse(ssl.SSLContext):
    """A verifying client context that loads the system's CA certificates before
    its first handshake. Every TLS connection starts from ``wrap_socket`` (blocking
    sockets) or ``wrap_bio`` (asyncio and anyio streams)."""

    _loaded: bool
    _lock: threading.Lock

    @classmethod
    def made(cls) -> _SystemCertificatesOnFirstUse:
        # PROTOCOL_TLS_CLIENT verifies the certificate and the host name by
        # default, as ssl.create_default_context does.
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context._loaded = False
        context._lock = threading.Lock()
        return context

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._load_certificates()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._load_certificates()
        return super().wrap_bio(*args, **kwargs)

    def _load_certificates(self) -> None:
        with self._lock:
            if not self._loaded:
                self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                self._loaded = True


@functools.cache
def client_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """Verification against the system's CA certificates (or ``ca_file``), unless
    ``verify`` is False."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file is not None:
        return ssl.create_default_context(cafile=ca_file)
    return _SystemCertificatesOnFirstUse.made()
