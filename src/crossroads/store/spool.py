"""Rows the store's writer could not commit (database down, disk full), kept on disk until it can.

An append-only file of JSON lines, each ``[kind, params]``, fsync'd before the writer moves on,
so a decision or outcome the server acknowledged survives an outage of the database and a
restart of the server; the store replays the file in order when the database takes writes
again.  It is bounded: past ``max_bytes`` the server refuses new requests (503) rather than
lose what it accepts.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any


class Spool:
    """``rows`` are ``(kind, params)``: ``kind`` names the statement, ``params`` its values (bytes allowed)."""

    def __init__(self, path: str | Path, max_bytes: int):
        self.path, self.max_bytes = Path(path), int(max_bytes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._size = self.path.stat().st_size if self.path.exists() else 0

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def empty(self) -> bool:
        return self._size == 0

    @property
    def full(self) -> bool:
        return self._size >= self.max_bytes

    def append(self, rows: list[tuple[str, tuple]]) -> None:
        """Add ``rows`` at the end, durably (fsync'd) before returning."""
        data = "".join(json.dumps([kind, [_encode(value) for value in params]], separators=(",", ":")) + "\n"
                       for kind, params in rows).encode("utf-8", "surrogatepass")
        with self._lock, open(self.path, "ab") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            self._size += len(data)

    def rows(self) -> list[tuple[str, tuple]]:
        """Every spooled row, oldest first (a line torn by a crash mid-write is skipped)."""
        with self._lock:
            if not self.path.exists():
                return []
            text = self.path.read_bytes().decode("utf-8", "surrogatepass")
        rows = []
        for line in text.splitlines():
            try:
                kind, params = json.loads(line)
            except ValueError:
                continue
            rows.append((kind, tuple(_decode(value) for value in params)))
        return rows

    def replace(self, rows: list[tuple[str, tuple]]) -> None:
        """Keep only ``rows`` (empty: the database took everything)."""
        with self._lock, open(self.path, "wb") as file:
            file.flush()
            os.fsync(file.fileno())
            self._size = 0
        if rows:
            self.append(rows)


def _encode(value: Any) -> Any:
    return {"b64": base64.b64encode(value).decode("ascii")} if isinstance(value, bytes) else value


def _decode(value: Any) -> Any:
    return base64.b64decode(value["b64"]) if isinstance(value, dict) else value
