"""The frames of the ``tcp`` piece transport (specified in docs/transport-tcp.md)."""

from __future__ import annotations

import enum
import struct
from typing import Final, TypeVar

_T = TypeVar("_T")

VERSION: Final = 1
MAGIC: Final = b"DPYT"
#: Capability bits of HELLO and HELLO_ACK.
CAP_ZSTD: Final = 0x1
CAP_TRACE: Final = 0x2
CAP_CANCEL: Final = 0x4
#: Flag bits of a PIECE frame.
FLAG_ZSTD: Final = 0x1
#: Flag bits of a GET frame: a trace context follows the task ID.
FLAG_TRACE: Final = 0x1
#: The largest body of a frame a client may send (HELLO, GET).
MAX_REQUEST_BODY: Final = 4096
#: The largest body of an ERROR or HELLO_ACK frame a client accepts.
MAX_CONTROL_BODY: Final = 4096

HEADER: Final = struct.Struct(">BBHIQ")  # type, flags, reserved, request ID, length
HELLO: Final = struct.Struct(">4sHI")  # magic, version, capabilities
HELLO_ACK: Final = struct.Struct(">4sHIH")  # magic, version, capabilities, depth
GET: Final = struct.Struct(">II")  # piece number, task ID length
PIECE: Final = struct.Struct(">IQQB")  # number, offset, length, digest length
ERROR: Final = struct.Struct(">HH")  # code, message length

# Pieces smaller than this are never worth a compression attempt.
MIN_COMPRESS: Final = 512
# Bytes of a larger piece compressed first, to see whether the rest is worth it.
COMPRESSION_SAMPLE: Final = 64 * 1024
# How long a closing connection waits for the peer's FIN: closing with unread bytes
# makes the kernel send RST, which can destroy an error frame not yet read.
LINGER: Final = 1.0
SEND_THREADS: Final = 32
SOCKET_BUFFER: Final = 4 * 1024 * 1024


class FrameType(enum.IntEnum):
    HELLO = 1
    HELLO_ACK = 2
    GET = 3
    PIECE = 4
    ERROR = 5
    CANCEL = 6


class ErrorCode(enum.IntEnum):
    NOT_FOUND = 1
    BAD_REQUEST = 2
    UNKNOWN_FRAME = 3
    FRAME_TOO_LARGE = 4
    PROTOCOL = 5
    UNSUPPORTED_VERSION = 6
    BUSY = 7
    INTERNAL = 8
    CANCELLED = 9


def encode_frame(
    kind: int, request_id: int, body: bytes = b"", *, flags: int = 0
) -> bytes:
    return HEADER.pack(kind, flags, 0, request_id, len(body)) + body


def encode_error(request_id: int, code: ErrorCode, message: str) -> bytes:
    text = message.encode()[:1024]
    body = ERROR.pack(code, len(text)) + text
    return encode_frame(FrameType.ERROR, request_id, body)


def encode_get(
    request_id: int, task_id: str, number: int, traceparent: str = ""
) -> bytes:
    """A GET, with a W3C ``traceparent`` when one is given (only to a server that
    accepted ``CAP_TRACE``)."""
    encoded = task_id.encode()
    body = GET.pack(number, len(encoded)) + encoded
    if not traceparent:
        return encode_frame(FrameType.GET, request_id, body)
    trace = traceparent.encode("ascii")
    body += bytes((len(trace),)) + trace
    return encode_frame(FrameType.GET, request_id, body, flags=FLAG_TRACE)
