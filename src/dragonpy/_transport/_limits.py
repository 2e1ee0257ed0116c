"""Upload limits for piece servers: how many pieces go out at once, and how fast.

A server applies its ``UploadLimits`` through one ``UploadThrottle`` shared by all
its connections, in two steps:

1. On the event loop, each piece reply takes a slot (``async with throttle.slot()``)
   before its worker thread starts. When every slot is taken it waits its turn,
   behind at most as many replies as there are slots; past that, ``slot`` raises
   ``UploadBusy`` and the server answers "busy", so that the requester asks a parent
   with a shorter queue. On a slow uplink, a deep queue would hold pieces back that
   other parents could give sooner, and that the requester could pass on.
2. In the worker thread, once the reply's exact size is known (after the store read
   and any compression), ``throttle.pace(size)`` holds the thread until the server's
   byte budget covers it. The reply then goes out in one zero-copy send.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio
import anyio.from_thread
import attrs

__all__ = [
    "BUSY_MESSAGE",
    "DEFAULT_UPLOAD_LIMITS",
    "TokenBucket",
    "UploadBusy",
    "UploadLimits",
    "UploadStatistics",
    "UploadThrottle",
]


@attrs.frozen
class UploadLimits:
    """What a piece server may send.

    ``max_concurrent_pieces`` pieces are sent at once across all connections; as
    many more wait their turn, and the rest are refused as busy. ``bandwidth``
    caps the bytes per second of the whole server, or is None for no cap.
    """

    max_concurrent_pieces: int = attrs.field(default=2)
    bandwidth: int | None = attrs.field(default=None)

    @max_concurrent_pieces.validator
    def _check_max_concurrent_pieces(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_concurrent_pieces must be at least 1, got {value}")

    @bandwidth.validator
    def _check_bandwidth(self, _: object, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError(
                f"bandwidth must be a positive number of bytes per second, or None "
                f"for no limit; got {value}"
            )


#: 2 pieces at once, no bandwidth limit (docs/transport.md says why 2).
DEFAULT_UPLOAD_LIMITS: Final = UploadLimits()


@attrs.frozen
class UploadStatistics:
    """What a server's ``UploadThrottle`` has let through, for metrics."""

    #: Pieces holding a slot now.
    pieces_in_flight: int
    #: Piece replies handed to the socket; one cut off midway counts whole.
    pieces_sent: int
    bytes_sent: int
    #: Pieces that found every slot taken and waited for one.
    slot_waits: int
    #: Pieces refused because as many were waiting as there are slots.
    busy_refusals: int
    #: Pieces held back by the bandwidth limit.
    bandwidth_waits: int
    #: Piece requests the requester called off before their piece was sent.
    withdrawals: int


class UploadBusy(Exception):
    """Every slot is taken and as many replies wait for one."""


#: What a server answers to a piece request refused as busy.
BUSY_MESSAGE: Final = (
    "every upload slot is taken and as many pieces wait; ask another parent"
)


class TokenBucket:
    """A byte budget that refills at ``rate`` bytes per second, up to ``burst``.

    ``reserve`` always takes the tokens at once, going into debt when there are too
    few, and says how long to wait before using them. Later reservations queue
    behind the debt, so they are paid for in order and, however many threads share
    the bucket, no more than ``burst + rate * t`` bytes start in any ``t`` seconds.
    Not thread-safe: callers hold a lock.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def reserve(self, amount: int) -> float:
        """Take ``amount`` tokens; the seconds until they are paid for."""
        now = self._clock()
        refill = (now - self._updated) * self.rate
        self._tokens = min(self.burst, self._tokens + refill)
        self._updated = now

        self._tokens -= amount
        return max(0.0, -self._tokens / self.rate)


class UploadThrottle:
    """Applies a server's ``UploadLimits`` to every piece it sends."""

    def __init__(
        self, limits: UploadLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        # ``pace`` runs in worker threads, several at once.
        self._lock = threading.Lock()
        self._pieces_in_flight = self._pieces_sent = self._bytes_sent = 0
        self._waiting = self._slot_waits = self._busy_refusals = 0
        self._bandwidth_waits = self._withdrawals = 0
        self.update(limits)

    def update(self, limits: UploadLimits) -> None:
        """Apply ``limits`` from now on (a daemon reloading its configuration).

        Pieces that hold a slot already keep it, so for a moment up to the old and
        the new number of pieces may be in flight together.
        """
        slots = anyio.Semaphore(limits.max_concurrent_pieces)
        bucket: TokenBucket | None = None
        if limits.bandwidth is not None:
            # A burst of one second of bandwidth: a server that was idle may send
            # that much at once, so occasional requests are not slowed, and over
            # any few seconds the rate holds. A larger piece is fine too: it waits
            # until the bucket has refilled past it.
            bucket = TokenBucket(limits.bandwidth, limits.bandwidth, self._clock)
        with self._lock:
            self.limits, self._slots, self._bucket = limits, slots, bucket

    def statistics(self) -> UploadStatistics:
        with self._lock:
            return UploadStatistics(
                pieces_in_flight=self._pieces_in_flight,
                pieces_sent=self._pieces_sent,
                bytes_sent=self._bytes_sent,
                slot_waits=self._slot_waits,
                busy_refusals=self._busy_refusals,
                bandwidth_waits=self._bandwidth_waits,
                withdrawals=self._withdrawals,
            )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot while one piece is read and sent; wait while none is free,
        unless as many wait already as there are slots (``UploadBusy``)."""
        # A free slot is taken without a checkpoint, which would cost a trip round
        # the event loop per piece; the thread call that follows is one anyway.
        slots = self._slots  # the one to give back, whatever ``update`` does
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._wait_for(slots)
        self._pieces_in_flight += 1
        try:
            yield
        finally:
            self._pieces_in_flight -= 1
            slots.release()

    async def _wait_for(self, slots: anyio.Semaphore) -> None:
        if self._waiting >= self.limits.max_concurrent_pieces:
            self._busy_refusals += 1
            raise UploadBusy
        self._slot_waits += 1
        self._waiting += 1
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1

    def count_withdrawal(self) -> None:
        """Count a piece request called off before its piece was sent."""
        with self._lock:
            self._withdrawals += 1

    def pace(self, size: int) -> None:
        """Count a piece reply of ``size`` bytes about to be sent, holding the
        calling worker thread until the bandwidth limit allows it."""
        with self._lock:
            self._pieces_sent += 1
            self._bytes_sent += size
            delay = 0.0 if self._bucket is None else self._bucket.reserve(size)
            if delay > 0:
                self._bandwidth_waits += 1

        if delay > 0:
            # On the event loop, in the sending task's cancel scope: cancelling the
            # server ends the wait at once instead of sleeping it out.
            anyio.from_thread.run(anyio.sleep, delay)
