"""Measure TCP goodput between two lab hosts: ``receive PORT`` prints the bytes it
got and the seconds from the first to the last; ``send HOST PORT BYTES`` sends."""

from __future__ import annotations

import socket
import sys
import time


def receive(port: int) -> None:
    with socket.create_server(("0.0.0.0", port)) as server:
        print("listening", flush=True)
        connection, _ = server.accept()
        with connection:
            total, started = 0, 0.0
            while chunk := connection.recv(1 << 20):
                if not total:
                    started = time.monotonic()
                total += len(chunk)
            print(total, time.monotonic() - started, flush=True)


def send(host: str, port: int, count: int) -> None:
    block = b"\0" * (1 << 20)
    with socket.create_connection((host, port), timeout=30) as connection:
        while count > 0:
            count -= connection.send(block[: min(count, len(block))])


if __name__ == "__main__":
    if sys.argv[1] == "receive":
        receive(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
