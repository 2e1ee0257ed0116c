"""Where the daemon that owns a store directory listens for ``dragonpy get``.

Kept apart from the daemon so that ``dragonpy get`` can look for the socket
without importing the daemon.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Final

from ._errors import DragonpyError

#: The control socket's name inside the store directory.
CONTROL_SOCKET: Final = "daemon.sock"
# sockaddr_un holds 108 bytes with the terminating NUL (unix(7)).
_MAX_SOCKET_PATH: Final = 107
# Not the temporary directory: TMPDIR differs between processes and can itself be
# too deep.
_SHORT_SOCKET_ROOT: Final = "/tmp"


def control_socket_path(store_dir: str | os.PathLike[str]) -> str:
    """Where the daemon owning ``store_dir`` listens for ``dragonpy get``.

    ``<store>/daemon.sock`` when that path fits in a socket address. A deeper store
    gets a socket named after its real path in ``/tmp/dragonpy-<uid>``, the uid
    being the store's owner, so a daemon and a CLI sharing the store agree on it
    whatever their environments say.
    """
    inside = os.path.join(store_dir, CONTROL_SOCKET)
    if len(os.fsencode(inside)) <= _MAX_SOCKET_PATH:
        return inside
    real = os.path.realpath(store_dir)
    name = hashlib.sha256(os.fsencode(real)).hexdigest()[:32]
    owner = os.stat(real).st_uid
    return os.path.join(_SHORT_SOCKET_ROOT, f"dragonpy-{owner}", f"{name}.sock")


def make_socket_directory(socket_path: str) -> None:
    """Create the directory of a control socket outside its store, private to
    this user; refuse one somebody else made."""
    directory = os.path.dirname(socket_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    status = os.lstat(directory)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
        raise DragonpyError(
            f"{directory} is not a directory of this user's; remove it, or give "
            "the daemon a store directory with a shorter path"
        )
