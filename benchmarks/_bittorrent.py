"""A libtorrent client for the lab: make a torrent, seed it, or download it.

Runs under Debian's ``/usr/bin/python3``, which has ``python3-libtorrent``; it
imports nothing from this repository, so any Python with libtorrent runs it.

    _bittorrent.py create FILE TORRENT [--piece-size BYTES]
    _bittorrent.py seed TORRENT FOLDER --listen IP:PORT --ready FILE [--super-seed]
    _bittorrent.py leech TORRENT FOLDER --listen IP:PORT --done FILE [--peer IP:PORT]...

``seed`` creates the ``--ready`` file once its pieces are checked. ``leech`` creates the
``--done`` file when it holds every piece, then goes on seeding to the others, as a
BitTorrent peer does. Both run until SIGTERM. Peers are given explicitly (no tracker,
no DHT): every leecher connects to the seeder and to every other leecher.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import libtorrent as lt

_POLL_SECONDS = 0.02


def create(source: Path, torrent: Path, piece_size: int) -> None:
    files = lt.file_storage()
    lt.add_files(files, str(source))
    # v1 only: v2's per-block merkle hashing is CPU the other contenders do not pay.
    made = lt.create_torrent(files, piece_size, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(made, str(source.parent))
    torrent.write_bytes(lt.bencode(made.generate()))


def session(listen: str, *, seed: bool) -> lt.session:
    settings = lt.high_performance_seed() if seed else lt.default_settings()
    settings.update(
        {
            "listen_interfaces": listen,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            # TCP only, as the other contenders; uTP's congestion control backs
            # off in front of tbf's queue.
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "alert_mask": lt.alert.category_t.error_notification,
        }
    )
    return lt.session(settings)


def add(ses: lt.session, torrent: Path, folder: Path, flags: int) -> lt.torrent_handle:
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(folder)
    # Started now and never queued: libtorrent's queueing would hold torrents back.
    unwanted = lt.torrent_flags.auto_managed | lt.torrent_flags.paused
    params.flags = (params.flags | flags) & ~unwanted
    return ses.add_torrent(params)


def seed(
    torrent: Path, folder: Path, listen: str, ready: Path, super_seed: bool
) -> None:
    ses = session(listen, seed=True)
    flags = lt.torrent_flags.super_seeding if super_seed else 0
    handle = add(ses, torrent, folder, flags)
    _wait(lambda: handle.status().is_seeding)
    ready.touch()
    _serve_until_stopped(ses)


def leech(
    torrent: Path, folder: Path, listen: str, peers: list[str], done: Path
) -> None:
    ses = session(listen, seed=False)
    handle = add(ses, torrent, folder, 0)
    for peer in peers:
        host, port = peer.rsplit(":", 1)
        handle.connect_peer((host, int(port)))
    _wait(lambda: handle.status().is_seeding)
    done.touch()
    _serve_until_stopped(ses)


def _wait(condition: Callable[[], bool]) -> None:
    while not condition():
        time.sleep(_POLL_SECONDS)


def _serve_until_stopped(ses: lt.session) -> None:
    stopped = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, on_term)
    while not stopped:
        for alert in ses.pop_alerts():
            print(alert.message(), file=sys.stderr, flush=True)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    creating = commands.add_parser("create")
    creating.add_argument("source", type=Path)
    creating.add_argument("torrent", type=Path)
    creating.add_argument("--piece-size", type=int, default=4 * 1024 * 1024)
    for name in ("seed", "leech"):
        command = commands.add_parser(name)
        command.add_argument("torrent", type=Path)
        command.add_argument("folder", type=Path)
        command.add_argument("--listen", required=True)
    commands.choices["seed"].add_argument("--super-seed", action="store_true")
    commands.choices["seed"].add_argument("--ready", type=Path, required=True)
    commands.choices["leech"].add_argument("--peer", action="append", default=[])
    commands.choices["leech"].add_argument("--done", type=Path, required=True)
    args = parser.parse_args()

    if args.command == "create":
        create(args.source, args.torrent, args.piece_size)
    elif args.command == "seed":
        seed(args.torrent, args.folder, args.listen, args.ready, args.super_seed)
    else:
        leech(args.torrent, args.folder, args.listen, args.peer, args.done)


if __name__ == "__main__":
    main()
