"""A real ``docker-registry`` (distribution v2.8) for tests, in three auth modes.

``run_registry`` starts ``/usr/bin/docker-registry`` on a free loopback port with
its storage under the test's temporary directory. With ``auth="htpasswd"`` it wants
HTTP basic credentials; with ``auth="token"`` it sends Bearer challenges that point
at a token server run in a thread of the test process, so tests can count and
steer token requests. The user is always ``alice`` / ``secret-pw``.

This module does not import pytest: it is plain code that tests (and benchmarks)
can call.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Final, Literal

import bcrypt
import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["PASSWORD", "USERNAME", "Registry", "TokenServer", "run_registry"]

USERNAME: Final = "alice"
PASSWORD: Final = "secret-pw"
REGISTRY_BINARY: Final = "/usr/bin/docker-registry"
SERVICE: Final = "dragonpy-test-registry"
ISSUER: Final = "dragonpy-test-issuer"
_STARTUP_SECONDS: Final = 20.0
_POLL_SECONDS: Final = 0.05
_STOP_SECONDS: Final = 10.0

AuthMode = Literal["none", "htpasswd", "token"]
Access = list[dict[str, object]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TokenIssuer:
    """Signs registry JWTs with a throwaway EC key.

    distribution v2.8 accepts a token whose ``x5c`` header chains to a certificate
    of its ``rootcertbundle``; a self-signed certificate is both chain and root,
    which spares us the libtrust ``kid`` format.
    """

    def __init__(self, cert_path: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self._key, hashes.SHA256())
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        der = cert.public_bytes(serialization.Encoding.DER)
        self._x5c = [base64.b64encode(der).decode("ascii")]

    def mint(self, subject: str, access: Access, lifetime: float) -> str:
        """A JWT granting ``access`` (the distribution token's ``access`` claim)."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "iat": now,
            "nbf": now - 10,
            "exp": now + int(lifetime),
            "jti": secrets.token_hex(8),
            "access": access,
        }
        return jwt.encode(
            claims, self._key, algorithm="ES256", headers={"x5c": self._x5c}
        )


def _requested_access(scopes: list[str], *, anonymous: bool) -> Access:
    """What the token grants for the ``scope`` parameters asked for.

    ``alice`` gets everything she asks for; anonymous callers get pull access to
    ``public/*`` repositories only, and an empty grant otherwise (as Docker Hub
    does: the registry then answers 401).
    """
    access: Access = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        wanted = [a for a in actions.split(",") if a]
        if anonymous:
            allowed = name.startswith("public/")
            wanted = [a for a in wanted if allowed and a == "pull"]
        if wanted:
            access.append({"type": kind, "name": name, "actions": wanted})
    return access


class TokenServer:
    """The token endpoint (Docker token auth spec), in a thread.

    Counters and knobs are plain attributes so tests can read and steer them:
    ``token_requests`` counts every GET, ``expires_in`` is what the next token says,
    ``broken`` makes the endpoint answer 200 with a body that is not JSON.
    """

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self.expires_in = 300
        self.broken = False
        self.token_requests = 0
        self.scopes_seen: list[list[str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-server", daemon=True
        )

    @property
    def realm(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/token"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def answer(self, query: str, authorization: str | None) -> tuple[int, bytes]:
        """Status and body for one token request."""
        params = urllib.parse.parse_qs(query)
        with self._lock:
            self.token_requests += 1
            self.scopes_seen.append(params.get("scope", []))
        if self.broken:
            return 200, b"<html>not a token</html>"
        subject = _basic_user(authorization)
        if authorization is not None and subject is None:
            return 401, b'{"details":"bad credentials"}'
        access = _requested_access(params.get("scope", []), anonymous=subject is None)
        token = self.issuer.mint(subject or "", access, self.expires_in)
        body = {"token": token, "access_token": token, "expires_in": self.expires_in}
        return 200, json.dumps(body).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path != "/token":
                    status, body = 404, b"{}"
                else:
                    status, body = server.answer(query, self.headers["Authorization"])
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet; the counters say what happened."""

        return Handler


def _basic_user(authorization: str | None) -> str | None:
    """The user name if ``authorization`` carries alice's right password."""
    if authorization is None or not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:], validate=True).decode()
    except ValueError:
        return None
    user, _, password = decoded.partition(":")
    return user if (user, password) == (USERNAME, PASSWORD) else None


class Registry:
    """A running registry: where it listens and how to put content in it."""

    def __init__(
        self, port: int, auth: AuthMode, log_path: Path, tokens: TokenServer | None
    ) -> None:
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self.auth = auth
        self.log_path = log_path
        self.tokens = tokens

    @property
    def token_requests(self) -> int:
        """Token GETs served so far (0 unless ``auth="token"``)."""
        return self.tokens.token_requests if self.tokens else 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def blob_bytes(self, digest: str) -> int:
        """Body bytes of blob ``digest`` the registry sent (from its access log)."""
        total = 0
        for line in self.log().splitlines():
            request, _, rest = line.partition('" ')
            if request.endswith(f"/blobs/{digest} HTTP/1.1") and '"GET ' in request:
                total += int(rest.split()[1])
        return total

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload ``data`` monolithically (OCI distribution spec, "Pushing blobs").

        POST opens an upload session; a single PUT with ``?digest=`` carries the
        bytes and closes it.
        """
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._client(repo) as client:
            started = client.post(f"/v2/{repo}/blobs/uploads/")
            _expect(started, 202)
            location = started.url.join(started.headers["Location"])
            done = client.put(
                location.copy_add_param("digest", digest),
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            _expect(done, 201)
        return digest

    def push_manifest(
        self, repo: str, tag: str, manifest_bytes: bytes, media_type: str
    ) -> str:
        """PUT a manifest under ``tag``; return its digest."""
        with self._client(repo) as client:
            response = client.put(
                f"/v2/{repo}/manifests/{tag}",
                content=manifest_bytes,
                headers={"Content-Type": media_type},
            )
            _expect(response, 201)
        digest: str = response.headers.get("Docker-Content-Digest", "")
        return digest or "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()

    def _client(self, repo: str) -> httpx.Client:
        """A client authorised to push to ``repo``, independent of RegistryAuth."""
        headers: dict[str, str] = {}
        if self.auth == "htpasswd":
            pair = f"{USERNAME}:{PASSWORD}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif self.tokens is not None:
            access: Access = [
                {"type": "repository", "name": repo, "actions": ["pull", "push"]}
            ]
            token = self.tokens.issuer.mint(USERNAME, access, 300)
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.url} answered"
            f" {response.status_code}, not {status}: {response.text}"
        )


def _auth_section(auth: AuthMode, tmp_path: Path, tokens: TokenServer | None) -> str:
    if auth == "htpasswd":
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4))
        htpasswd = tmp_path / "htpasswd"
        htpasswd.write_text(f"{USERNAME}:{hashed.decode()}\n")
        return (
            "auth:\n  htpasswd:\n    realm: dragonpy-test\n"
            f"    path: {json.dumps(str(htpasswd))}\n"
        )
    if auth == "token":
        assert tokens is not None
        return (
            "auth:\n  token:\n"
            f"    realm: {json.dumps(tokens.realm)}\n"
            f"    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n"
            f"    rootcertbundle: {json.dumps(str(tmp_path / 'token-cert.pem'))}\n"
        )
    return ""


def _write_config(
    tmp_path: Path, port: int, auth: AuthMode, tokens: TokenServer | None
) -> Path:
    """A minimal config.yml; JSON strings double as YAML quoted scalars."""
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {json.dumps(str(storage))}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        "http:\n"
        f'  addr: "127.0.0.1:{port}"\n'
        f"  secret: {secrets.token_hex(16)}\n" + _auth_section(auth, tmp_path, tokens)
    )
    return config


def _registry_env() -> Mapping[str, str]:
    """The environment minus REGISTRY_* variables, which override config.yml."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def _wait_ready(process: subprocess.Popen[bytes], registry: Registry) -> None:
    """Poll ``GET /v2/`` until it answers 200 or 401, or fail with the log."""
    deadline = time.monotonic() + _STARTUP_SECONDS
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(f"{registry.url}/v2/").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            try:
                process.wait(timeout=_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(
                f"docker-registry exited with {process.returncode}:\n{registry.log()}"
            )
    raise RuntimeError(
        f"docker-registry not ready after {_STARTUP_SECONDS}s:\n{registry.log()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def run_registry(tmp_path: Path, *, auth: AuthMode = "none") -> Iterator[Registry]:
    """Run docker-registry until the ``with`` block ends."""
    with ExitStack() as stack:
        tokens: TokenServer | None = None
        if auth == "token":
            tokens = TokenServer(TokenIssuer(tmp_path / "token-cert.pem"))
            stack.callback(tokens.close)
            tokens.start()
        port = _free_port()
        config = _write_config(tmp_path, port, auth, tokens)
        registry = Registry(port, auth, tmp_path / "registry.log", tokens)
        log: IO[bytes] = stack.enter_context(registry.log_path.open("wb"))
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_registry_env(),
        )
        stack.callback(_stop, process)
        _wait_ready(process, registry)
        yield registry
