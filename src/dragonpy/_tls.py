"""TLS client settings, made once per process and setting.

Loading the CA certificates takes 40 to 60 ms on a small machine, and an httpx client
given no context loads its own: a daemon has several clients, and every start of a
daemon or of ``dragonpy get`` paid for each of them.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def client_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """Verification against the system's CA certificates (or ``ca_file``), unless
    ``verify`` is False."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)
