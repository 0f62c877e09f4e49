"""Embeddings from any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

Works with OpenAI itself and with servers that copy its wire format (vLLM, llama.cpp,
Ollama, text-embeddings-inference, LiteLLM ...).  The API key is read from an
environment variable when a request is sent and is never stored, printed or logged.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import httpx
import numpy as np

from crossroads.embeddings.base import Embedder, normalise
from crossroads.errors import CrossroadsError
from crossroads.http import post_json

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Below this many texts no progress bar is shown, even when asked for.
PROGRESS_MIN_TEXTS = 256
#: Vector sizes of OpenAI's models, so ``dimension`` needs no request for them.
KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAICompatibleEmbedder(Embedder):
    """Embeds through an OpenAI-compatible HTTP endpoint, ``batch_size`` texts per request.

    ``api_key_env`` is the *name* of the environment variable that holds the key; when
    it is unset no ``Authorization`` header is sent (fine for most local servers).
    Status 408, 409, 429 and 5xx and network errors are retried ``max_retries`` times,
    waiting ``backoff_s`` x 2^attempt (or the server's ``Retry-After``).  ``dimensions``
    is passed on to models that can shorten their vectors (text-embedding-3-*).
    ``transport`` is httpx's seam for tests and proxies.

    >>> embedder = OpenAICompatibleEmbedder("text-embedding-3-small")
    >>> embedder.name, embedder.dimension
    ('openai:text-embedding-3-small@https://api.openai.com/v1', 1536)
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
        transport: httpx.BaseTransport | None = None,
    ):
        if not model:
            raise CrossroadsError("OpenAICompatibleEmbedder needs a model name, e.g. 'text-embedding-3-small'")
        if batch_size < 1:
            raise CrossroadsError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.transport = transport
        self.name = f"openai:{model}@{self.base_url}" + (f"/dimensions={dimensions}" if dimensions else "")
        self._dimension: int | None = dimensions or KNOWN_DIMENSIONS.get(model)
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleEmbedder(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    @property
    def dimension(self) -> int:  # type: ignore[override]
        """The vector size; for a model of unknown size the first call sends one short request."""
        if self._dimension is None:
            self.embed(["dimension probe"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str: wrap it in a list")
        texts = list(texts)
        if not texts:
            return np.empty((0, self._dimension or 0), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        if progress and len(texts) > PROGRESS_MIN_TEXTS:
            from rich.console import Console
            from rich.progress import track

            starts = track(starts, description="embedding", console=Console(stderr=True), transient=True)
        parts = [self._embed_batch(texts[start : start + self.batch_size]) for start in starts]
        return np.concatenate(parts)

    def close(self) -> None:
        """Close the connection pool (it reopens if the embedder is used again)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- internals ----------------------------------------------------------------
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        payload: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        response = self._post(payload)
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
        return f"{self.base_url}/embeddings"

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, transport=self.transport)
        return post_json(self._client, self._url, payload, model=self.model, api_key_env=self.api_key_env,
                         max_retries=self.max_retries, backoff_s=self.backoff_s, timeout_s=self.timeout_s)

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
