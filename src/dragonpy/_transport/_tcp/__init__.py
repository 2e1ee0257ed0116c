"""The ``tcp`` piece transport: a small framed binary protocol over TCP.

The wire format is specified in ``docs/transport-tcp.md``. In short: every frame is a
16-byte header (type, flags, request ID, body length, big-endian) and a body. A
connection opens with HELLO / HELLO_ACK, which fixes the protocol version and whether
zstd may be used; then the client pipelines GET frames and the server answers each
with a PIECE or an ERROR frame carrying the same request ID, in request order.

The server reads requests on the event loop and sends each answer from a worker
thread, inside the store's read transaction, so an uncompressed piece goes from the
LMDB map to the socket without being copied into a Python object. The client keeps a
few connections per parent, pipelines requests over them and reads each body with
``recv_into`` from a worker thread, with the GIL released for the transfer.
"""

from ._client import TcpPieceClient
from ._server import TcpPieceServer, TcpServerStatistics

__all__ = ["TcpPieceClient", "TcpPieceServer", "TcpServerStatistics"]
