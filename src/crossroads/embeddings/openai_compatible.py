"""Embeddings from any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

Works with OpenAI itself and with servers that copy its wire format (vLLM, llama.cpp,
Ollama, text-embeddings-inference, LiteLLM ...).  The API key is read from an
environment variable when a request is sent and is never stored, printed or logged.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import httpx
import numpy as np

from crossroads.embeddings.base import Embedder, normalise
from crossroads.errors import CrossroadsError

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Below this many texts no progress bar is shown, even when asked for.
PROGRESS_MIN_TEXTS = 256
#: Vector sizes of OpenAI's models, so ``dimension`` needs no request for them.
KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_RETRY_STATUSES = {408, 409, 429} | set(range(500, 600))
_MAX_RETRY_AFTER_S = 60.0


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
        headers = {}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        problem, wait_s = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(wait_s)
            wait_s = self.backoff_s * 2**attempt
            try:
                response = self._client.post(self._url, json=payload, headers=headers)
            except httpx.TimeoutException as error:
                problem = f"no answer within {self.timeout_s:g} s ({type(error).__name__})"
                continue
            except httpx.TransportError as error:
                problem = f"could not connect: {error}"
                continue
            if response.status_code == 200:
                return response
            problem = f"status {response.status_code}: {_server_message(response)}"
            if response.status_code in (401, 403):
                hint = (
                    f"check the key in ${self.api_key_env}"
                    if key
                    else f"${self.api_key_env} is not set; put the API key there (or pass api_key_env=...)"
                )
                raise CrossroadsError(f"{self._url} refused the request ({problem}): {hint}")
            if response.status_code not in _RETRY_STATUSES:
                raise CrossroadsError(f"{self._url} rejected the request for model {self.model!r} ({problem})")
            wait_s = max(wait_s, _retry_after_s(response))
        raise CrossroadsError(
            f"{self._url} failed {self.max_retries + 1} times for model {self.model!r}; last error: {problem}. "
            "Check that the server is up, or raise max_retries / timeout_s"
        )

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


def _server_message(response: httpx.Response) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        body = response.json()
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        if message:
            return str(message)
    except (ValueError, AttributeError, KeyError, TypeError):
        pass
    return response.text[:300] or response.reason_phrase


def _retry_after_s(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), _MAX_RETRY_AFTER_S)
    except ValueError:  # an HTTP date: not worth parsing
        return 0.0
