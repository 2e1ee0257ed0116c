"""Origin backends, chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from .._errors import UnsupportedURL
from ._base import Backend, BackendOptions, Credentials, OriginStat

__all__ = [
    "Backend",
    "BackendOptions",
    "Backends",
    "Credentials",
    "OriginStat",
    "register_backend",
]

BackendFactory = Callable[[BackendOptions], Backend]


# Backends are imported when first used: httpx alone takes a tenth of a second to
# import, which a download served from the store never needs.
def _http_backend(options: BackendOptions) -> Backend:
    from ._http import HttpBackend

    return HttpBackend(options)


def _file_backend(options: BackendOptions) -> Backend:
    from ._file import FileBackend

    return FileBackend()


_FACTORIES: dict[str, BackendFactory] = {
    "http": _http_backend,
    "https": _http_backend,
    "oci": _http_backend,
    "file": _file_backend,
}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Serve URLs of ``scheme`` with backends made by ``factory``."""
    _FACTORIES[scheme.lower()] = factory


class Backends:
    """The backends of one process: made on first use, shared, closed together."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self._made: dict[BackendFactory, Backend] = {}

    def for_url(self, url: str) -> Backend:
        scheme = urlsplit(url).scheme.lower()
        factory = _FACTORIES.get(scheme)
        if factory is None:
            known = ", ".join(f"{name}://" for name in sorted(_FACTORIES))
            what = f"{scheme}://" if scheme else "a URL without a scheme"
            raise UnsupportedURL(f"no backend for {what} (supported: {known})")
        if factory not in self._made:
            self._made[factory] = factory(self.options)
        return self._made[factory]

    async def aclose(self) -> None:
        made, self._made = self._made, {}
        for backend in made.values():
            await backend.aclose()
