"""Embedders turn prompts into unit vectors that routers learn from.

Pick one with a spec string (what the CLI and config files use):

``minilm-onnx`` (default)
    all-MiniLM-L6-v2, int8 ONNX through onnxruntime, offline, 384 dimensions.
``minilm-st``
    the same model through sentence-transformers (optional extra, needs torch).
``openai:<model>[,base_url=<url>]``
    any OpenAI-compatible ``/embeddings`` endpoint, e.g. ``openai:text-embedding-3-small``
    or ``openai:nomic-embed-text,base_url=http://localhost:11434/v1``; the key is read from
    ``$OPENAI_API_KEY`` (``api_key_env=`` names another variable).

The embedder classes are imported on first use, so ``import crossroads.embeddings``
loads neither onnxruntime nor httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossroads.embeddings.base import Embedder, normalise
from crossroads.registry import Registry

if TYPE_CHECKING:
    from crossroads.embeddings.cache import CachedEmbedder  # noqa: F401
    from crossroads.embeddings.onnx_minilm import OnnxMiniLMEmbedder  # noqa: F401
    from crossroads.embeddings.openai_compatible import OpenAICompatibleEmbedder  # noqa: F401
    from crossroads.embeddings.sentence_transformer import SentenceTransformerEmbedder  # noqa: F401

DEFAULT_EMBEDDER = "minilm-onnx"
#: The embedders by spec name.
EMBEDDERS = Registry(
    "embedder",
    {"minilm-onnx": "crossroads.embeddings.onnx_minilm:OnnxMiniLMEmbedder",
     "minilm-st": "crossroads.embeddings.sentence_transformer:SentenceTransformerEmbedder",
     "openai": "crossroads.embeddings.openai_compatible:OpenAICompatibleEmbedder"},
    {"minilm-onnx": "all-MiniLM-L6-v2 int8 through onnxruntime, the default, offline",
     "minilm-st": "all-MiniLM-L6-v2 through sentence-transformers, needs the sentence-transformers extra",
     "openai": "openai:<model>[,base_url=<url>]: an OpenAI-compatible /embeddings endpoint, key in $OPENAI_API_KEY"},
)

_LAZY = {
    "CachedEmbedder": "crossroads.embeddings.cache",
    "OnnxMiniLMEmbedder": "crossroads.embeddings.onnx_minilm",
    "OpenAICompatibleEmbedder": "crossroads.embeddings.openai_compatible",
    "SentenceTransformerEmbedder": "crossroads.embeddings.sentence_transformer",
}

__all__ = ["DEFAULT_EMBEDDER", "EMBEDDERS", "Embedder", "make_embedder", "normalise", *_LAZY]


def make_embedder(spec: str = DEFAULT_EMBEDDER, cache: bool = True) -> Embedder:
    """The embedder named by ``spec`` (see the module docstring), behind a disk cache if ``cache``.

    Nothing is loaded or contacted here; that happens on the first ``embed``.

    >>> make_embedder("openai:text-embedding-3-small", cache=False).name
    'openai:text-embedding-3-small,base_url=https://api.openai.com/v1'
    """
    embedder = EMBEDDERS.build(spec)
    if cache:
        from crossroads.embeddings.cache import CachedEmbedder

        return CachedEmbedder(embedder)
    return embedder


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
