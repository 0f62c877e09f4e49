"""Embeddings from any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

Works with OpenAI itself and with servers that copy its wire format (vLLM, llama.cpp,
Ollama, text-embeddings-inference, LiteLLM ...).  The API key is read from an
environment variable when a request is sent and is never stored, printed or logged.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from crossroads.embeddings.base import Embedder, normalise, tracked
from crossroads.errors import CrossroadsError
from crossroads.upstream.http import Endpoint

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Vector sizes of OpenAI's models, so ``dimension`` needs no request for them.
KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAICompatibleEmbedder(Embedder):
    """Embeds through an OpenAI-compatible HTTP endpoint, ``batch_size`` texts per request.

    ``api_key_env`` is the *name* of the environment variable that holds the key; when
    it is unset no ``Authorization`` header is sent (fine for most local servers).
    Status 408, 409, 429 and 5xx and network errors are retried ``max_retries`` times,
    waiting ``backoff_s`` x 2^attempt (or the server's ``Retry-After``).  ``dimensions``
    is passed on to models that can shorten their vectors (text-embedding-3-*).
    ``http_client`` (an ``httpx.Client``) is the seam for tests and proxies.  ``name`` is
    the embedder's spec (see :data:`crossroads.embeddings.EMBEDDERS`), which builds it again.

    >>> embedder = OpenAICompatibleEmbedder("text-embedding-3-small")
    >>> embedder.name, embedder.dimension
    ('openai:text-embedding-3-small,base_url=https://api.openai.com/v1', 1536)
    """

    def __init__(
        self,
        model: str,
        base_url: str = OPENAI_BASE_URL,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        batch_size: int = 128,
        dimensions: int | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        http_client: httpx.Client | None = None,
    ):
        if not model:
            raise CrossroadsError("OpenAICompatibleEmbedder needs a model name, e.g. 'text-embedding-3-small'")
        if batch_size < 1:
            raise CrossroadsError(f"batch_size must be >= 1, got {batch_size}")
        self.endpoint = Endpoint(base_url, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries,
                                  backoff_s=backoff_s, http_client=http_client)
        self.model = model
        self.base_url = self.endpoint.base_url
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.name = f"openai:{model},base_url={self.base_url}" + (f",dimensions={dimensions}" if dimensions else "")
        self._dimension: int | None = dimensions or KNOWN_DIMENSIONS.get(model)

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleEmbedder(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.endpoint.api_key_env!r})"
        )

    @property
    def dimension(self) -> int:  # type: ignore[override]
        """The vector size; for a model of unknown size the first call sends one short request."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        starts = tracked(range(0, len(texts), self.batch_size), progress)
        parts = [self._embed_batch(texts[start : start + self.batch_size]) for start in starts]
        return np.concatenate(parts)

    def close(self) -> None:
        """Close the connection pool (it reopens if the embedder is used again)."""
        self.endpoint.close()

    # -- internals ----------------------------------------------------------------
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        payload: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        response = self.endpoint.post("embeddings", payload, model=self.model)
        vectors = self._parse(response, len(texts))
        if self._dimension is None:
            self._dimension = vectors.shape[1]
        elif vectors.shape[1] != self._dimension:
            raise CrossroadsError(
                f"{self._url}: model {self.model!r} returned {vectors.shape[1]}-dimensional vectors, "
                f"expected {self._dimension}"
            )
        return normalise(vectors)

    @property
    def _url(self) -> str:
        return self.endpoint.url("embeddings")

    def _parse(self, response: httpx.Response, expected: int) -> np.ndarray:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CrossroadsError(
                f"{self._url} answered with malformed JSON ({error}): {response.text[:200]!r}"
            ) from error
        try:
            rows = sorted(body["data"], key=lambda item: item["index"])
            if len(rows) != expected:
                raise CrossroadsError(f"{self._url} returned {len(rows)} vectors for {expected} texts")
            if [row["index"] for row in rows] != list(range(expected)):
                raise CrossroadsError(
                    f"{self._url} returned indexes {[row['index'] for row in rows]} for {expected} texts"
                )
            vectors = np.array([row["embedding"] for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise CrossroadsError(
                f"{self._url} answered JSON that is not an OpenAI embeddings response "
                f"(expected data[i].embedding lists of equal length and data[i].index; problem: {error!r}): "
                f"{response.text[:200]!r}"
            ) from error
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise CrossroadsError(f"{self._url} returned embeddings that are not lists of numbers")
        if not np.isfinite(vectors).all():
            raise CrossroadsError(f"{self._url} returned vectors holding NaN or infinity")
        return vectors
