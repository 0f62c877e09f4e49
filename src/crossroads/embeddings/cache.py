"""A disk cache in front of any embedder, so a text is embedded once per embedder.

Layout: ``<root>/<safe embedder name>/<checksum>.npy``.  Each shard is a structured
array of (sha256 of the text, vector) rows, written to a temporary file and renamed
into place, and named after the sha256 of its own bytes.  So a shard is either
complete or absent, any damage is detected when it is read, and processes can write
side by side without locks: each adds its own shards, and when shards pile up a
process merges the smallest shards it has read into one, then deletes only those.
A crash at any point leaves at worst a damaged or stray file, never a wrong vector.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

from crossroads.embeddings.base import Embedder
from crossroads.paths import cache_dir

_KEY_BYTES = 32
_CHECKSUM_HEX = 32
_STALE_TEMP_S = 3600.0


def safe_name(name: str) -> str:
    """A directory name for embedder ``name``: readable, and distinct for distinct names."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "embedder"
    return f"{readable}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:10]}"


def text_key(text: str) -> bytes:
    """The cache key of ``text``: its sha256 digest."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class CachedEmbedder(Embedder):
    """Wraps ``embedder`` with a disk cache; has the same ``name`` and ``dimension``.

    The cache lives in ``<directory>/<safe name>/``; ``directory`` defaults to
    ``crossroads.paths.cache_dir() / "embeddings"``.  Only texts not in the cache reach
    ``embedder`` (each once, however often it repeats), and ``progress`` is passed on
    for them alone.  Beyond ``max_shards`` shard files the smallest are merged.  A
    damaged shard is skipped with a warning (and deleted) and its texts are embedded
    again.  If the cache cannot be written, a warning says so and embedding goes on.
    """

    def __init__(self, embedder: Embedder, directory: str | os.PathLike[str] | None = None, *, max_shards: int = 32):
        if max_shards < 1:
            raise ValueError(f"max_shards must be >= 1, got {max_shards}")
        self.embedder = embedder
        self.directory = directory
        self.max_shards = max_shards
        self.name = embedder.name
        self._vectors: dict[bytes, np.ndarray] = {}
        self._shards: dict[str, list[bytes]] = {}  # shard file -> its keys, for shards in _vectors
        self._ignored: set[str] = set()  # shard files that were damaged or unreadable
        self._writable = True
        self._readable = True
        self._width: int | None = None  # vector size seen on disk or from the embedder

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.embedder!r}, directory={self.directory!r})"

    @property
    def dimension(self) -> int:  # type: ignore[override]
        # Known from the vectors when possible: asking a remote embedder may cost a request.
        return self._width if self._width is not None else self.embedder.dimension

    @property
    def path(self) -> Path:
        """The directory that holds this embedder's shards."""
        root = Path(self.directory) if self.directory is not None else cache_dir() / "embeddings"
        return root / safe_name(self.name)

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        keys = [text_key(text) for text in texts]
        if not self._shards:
            self._refresh()
        missing = [key for key in dict.fromkeys(keys) if key not in self._vectors]
        if missing:
            self._refresh()  # another process may have embedded them meanwhile
            missing = [key for key in missing if key not in self._vectors]
        if missing:
            text_of = dict(zip(keys, texts))
            vectors = self._embed_missing([text_of[key] for key in missing], progress)
            if self._width is not None and vectors.shape[1] != self._width:
                width = vectors.shape[1]
                self._forget(f"it holds {self._width}-dimensional vectors but {self.name} now gives {width}")
                missing = list(text_of)
                vectors = self._embed_missing([text_of[key] for key in missing], progress)
            self._width = vectors.shape[1]
            self._vectors.update(zip(missing, vectors))
            self._save(missing, vectors)
        return np.stack([self._vectors[key] for key in keys])

    def _embed_missing(self, texts: list[str], progress: bool) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed(texts, progress=progress), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ValueError(f"{self.embedder!r} returned an array of shape {vectors.shape} for {len(texts)} texts")
        return vectors

    # -- reading ------------------------------------------------------------------
    def _refresh(self) -> None:
        """Read the shards not read yet (written since by this or other processes)."""
        directory = self.path
        if not self._readable:
            return
        for _ in range(3):  # a shard merged away between listing and reading reappears merged
            try:
                with os.scandir(directory) as entries:
                    names = sorted(entry.name for entry in entries if entry.name.endswith(".npy"))
            except FileNotFoundError:
                return
            except OSError as error:
                self._readable = False
                return self._cannot_read(directory, error)
            vanished = False
            for name in names:
                if name in self._shards or name in self._ignored:
                    continue
                try:
                    data = (directory / name).read_bytes()
                except FileNotFoundError:
                    vanished = True
                    continue
                except OSError as error:
                    self._ignored.add(name)
                    self._cannot_read(directory / name, error)
                    continue
                rows = self._rows(name, data)
                if rows is None:
                    self._ignored.add(name)
                else:
                    self._vectors.update(rows)
                    self._shards[name] = list(rows)
            if not vanished:
                return

    def _cannot_read(self, path: Path, error: OSError) -> None:
        warnings.warn(
            f"cannot read the embedding cache at {path} ({error}); its texts will be embedded again",
            RuntimeWarning,
            stacklevel=4,
        )

    def _rows(self, name: str, data: bytes) -> dict[bytes, np.ndarray] | None:
        """The (key, vector) rows of shard ``name``, or ``None`` (with a warning) if it is damaged."""
        problem = None
        if hashlib.sha256(data).hexdigest()[:_CHECKSUM_HEX] != name.removesuffix(".npy"):
            problem = "its content does not match its checksum"
        else:
            try:
                table = np.load(io.BytesIO(data), allow_pickle=False)
                keys, vectors = table["key"], np.ascontiguousarray(table["vector"], dtype=np.float32)
                if vectors.ndim != 2 or keys.shape != (len(vectors), _KEY_BYTES):
                    problem = f"it holds arrays of shapes {keys.shape} and {vectors.shape}"
                elif self._width is not None and vectors.shape[1] != self._width:
                    problem = f"it holds {vectors.shape[1]}-dimensional vectors, others {self._width}-dimensional"
                elif not np.all(np.abs(np.linalg.norm(vectors, axis=1) - 1.0) < 1e-3):
                    problem = "it holds vectors that are not unit length"
            except (ValueError, KeyError, TypeError, OSError, EOFError) as error:
                problem = f"it cannot be read ({error})"
        if problem is not None:
            path = self.path / name
            warnings.warn(
                f"ignoring damaged embedding cache shard {path}: {problem}; its texts will be embedded again",
                RuntimeWarning,
                stacklevel=4,
            )
            try:
                path.unlink()
            except OSError:
                pass
            return None
        self._width = vectors.shape[1]
        blob = keys.tobytes()
        return {blob[i * _KEY_BYTES : (i + 1) * _KEY_BYTES]: vectors[i] for i in range(len(vectors))}

    def _forget(self, problem: str) -> None:
        """Drop every shard read so far: they disagree with the embedder."""
        warnings.warn(f"discarding the embedding cache in {self.path}: {problem}", RuntimeWarning, stacklevel=4)
        for name in self._shards:
            try:
                (self.path / name).unlink()
            except OSError:
                pass
        self._shards.clear()
        self._vectors.clear()
        self._width = None

    # -- writing ------------------------------------------------------------------
    def _save(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if not self._writable:
            return
        try:
            self._write_shard(keys, vectors)
            if len(self._shards) > self.max_shards:
                self._merge()
        except OSError as error:
            self._writable = False
            warnings.warn(
                f"cannot write the embedding cache in {self.path} ({error}); vectors will not be reused",
                RuntimeWarning,
                stacklevel=3,
            )

    def _write_shard(self, keys: list[bytes], vectors: np.ndarray) -> str:
        directory = self.path
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(directory / "embedder.json", json.dumps({"name": self.name}).encode("utf-8") + b"\n")
        row = [("key", np.uint8, (_KEY_BYTES,)), ("vector", np.float32, (vectors.shape[1],))]
        table = np.empty(len(keys), dtype=row)
        table["key"] = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)
        table["vector"] = vectors
        buffer = io.BytesIO()
        np.save(buffer, table, allow_pickle=False)
        data = buffer.getvalue()
        name = hashlib.sha256(data).hexdigest()[:_CHECKSUM_HEX] + ".npy"
        _write_atomic(directory / name, data)
        self._shards[name] = list(keys)
        return name

    def _merge(self) -> None:
        """Merge the smallest shards this process has read until ``max_shards // 2`` are left.

        Merging only the small ones keeps the work per write small however big the
        cache grows.  Shards are deleted only once their rows are in the merged shard.
        """
        by_size = sorted(self._shards, key=lambda name: len(self._shards[name]))
        chosen = by_size[: len(by_size) - self.max_shards // 2 + 1]
        keys = list(dict.fromkeys(key for name in chosen for key in self._shards[name]))
        merged = self._write_shard(keys, np.stack([self._vectors[key] for key in keys]))
        for name in chosen:
            if name != merged:
                del self._shards[name]
                try:
                    (self.path / name).unlink()
                except FileNotFoundError:
                    pass
        _remove_stale_temporaries(self.path)


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary files that writers which crashed left behind."""
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".tmp"):
                try:
                    if now - entry.stat().st_mtime > _STALE_TEMP_S:
                        os.unlink(entry.path)
                except FileNotFoundError:  # renamed into place or removed meanwhile
                    pass


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        # No fsync: a file cut short by a crash fails its checksum and is embedded again.
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
