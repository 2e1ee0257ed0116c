"""Piece storage in LMDB."""

from ._store import (
    PieceStore,
    StoredTask,
    StorePolicy,
    StoreStatistics,
    open_store,
)

__all__ = [
    "PieceStore",
    "StorePolicy",
    "StoreStatistics",
    "StoredTask",
    "open_store",
]
