"""POST JSON to an OpenAI-compatible endpoint with timeouts, retries and errors that never show the key.

The LLM judge and the embedder of an ``/embeddings`` endpoint call through an
:class:`Endpoint`; the chat providers (:mod:`crossroads.upstream.providers`) share its retry
rules and error messages in async form.  Both take an ``http_client``, the one seam where tests plug in
:class:`crossroads.upstream.fake.FakeUpstream`.
"""

from __future__ import annotations

import os
import re
import time
from contextvars import ContextVar
from typing import Any

import httpx

from crossroads.errors import CrossroadsError

RETRY_STATUSES = {408, 409, 429} | set(range(500, 600))
#: Headers the chat providers add to every call made in the current context (task): the W3C trace context of the
#: span timing the call (set by crossroads.serve, see its tracing module), so that an upstream that traces joins
#: the request's trace.  Never a key: a provider's own headers win over these.
CALL_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("crossroads_call_headers", default=None)
#: Hosts that refuse every call without a key.
KEYED_HOSTS = ("api.openai.com",)
MAX_RETRY_AFTER_S = 60.0
#: ``user:password@`` in a URL.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")
#: The value of a query parameter whose name says it holds a secret: ``?api-key=``, ``&key=``, ``token=``, ``sig=`` ...
_SECRET_PARAM = re.compile(r"(?i)([?&;][a-z0-9_.\-]*?(?:key|token|secret|password|passwd|pwd|sig|signature|auth|"
                           r"credential|session)[a-z0-9_.\-]*=)[^&#\s'\"]+")


def redact_credentials(text: str) -> str:
    """``text`` with the credentials URLs can carry blanked out: ``user:password@`` and secret query parameters.

    Messages about an upstream quote its URL (``could not reach ...``), and a ``base_url``
    may hold ``http://user:secret@host/v1`` or ``...?api-key=...``; every error built here
    and in :mod:`crossroads.upstream.providers` passes through this before anyone sees it.
    """
    return _SECRET_PARAM.sub(r"\1[redacted]", _URL_USERINFO.sub(r"\1[redacted]@", text))


def post_json(
    client: httpx.Client,
    url: str,
    payload: dict[str, Any],
    *,
    model: str,
    api_key_env: str | None,
    max_retries: int,
    backoff_s: float,
    timeout_s: float,
    label: str = "",
) -> httpx.Response:
    """The 200 response to ``payload``, retrying 408/409/429/5xx and network errors.

    Waits ``backoff_s`` x 2^attempt between tries, or the server's ``Retry-After``
    (capped at a minute).  The key is read from ``$api_key_env`` for each call and sent
    as a bearer token; it appears in no error.  ``label`` prefixes the error messages.
    """
    headers = {}
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    problem, wait_s = "", 0.0
    for attempt in range(max_retries + 1):
        if attempt:
            time.sleep(wait_s)
        wait_s = backoff_s * 2**attempt
        try:
            response = client.post(url, json=payload, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException as error:
            problem = f"no answer within {timeout_s:g} s ({type(error).__name__})"
            continue
        except httpx.TransportError as error:
            problem = f"could not connect: {error}"
            continue
        if response.status_code == 200:
            return response
        problem = f"status {response.status_code}: {server_message(response)}"
        if response.status_code in (401, 403):
            hint = (
                f"check the key in ${api_key_env}"
                if key
                else f"${api_key_env} is not set; put the API key there (or pass api_key_env=...)"
            )
            raise CrossroadsError(redact_credentials(f"{label}{url} refused the request ({problem}): {hint}"))
        if response.status_code not in RETRY_STATUSES:
            raise CrossroadsError(redact_credentials(f"{label}{url} rejected the request for model {model!r} ({problem})"))
        wait_s = max(wait_s, retry_after_s(response))
    raise CrossroadsError(redact_credentials(
        f"{label}{url} failed {max_retries + 1} times for model {model!r}; last error: {problem}. "
        "Check that the server is up, or raise max_retries / timeout_s"
    ))


def server_message(response: httpx.Response) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        body = response.json()
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        if message:
            return str(message)
    except (ValueError, AttributeError, KeyError, TypeError):
        pass
    return response.text[:300] or response.reason_phrase


def retry_after_s(response: httpx.Response, default: float = 0.0) -> float:
    """The seconds the server's ``Retry-After`` asks to wait (at most a minute), else ``default``."""
    try:
        return min(float(response.headers["retry-after"]), MAX_RETRY_AFTER_S)
    except (KeyError, ValueError):  # none, or an HTTP date: not worth parsing
        return default


class Endpoint:
    """An OpenAI-compatible base URL and how to call it: key, timeout, retries, and the HTTP client.

    Without ``http_client`` it opens its own ``httpx.Client`` on first use (``close`` shuts
    it; it reopens if used again); a given client stays the caller's to close.
    """

    def __init__(self, base_url: str, *, api_key_env: str | None, timeout_s: float, max_retries: int,
                 backoff_s: float, http_client: httpx.Client | None = None, label: str = ""):
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise CrossroadsError(redact_credentials(f"{label}{base_url}: need max_retries >= 0, timeout_s > 0 and "
                                                     "backoff_s >= 0"))
        self.base_url = base_url.rstrip("/")
        self.api_key_env, self.timeout_s, self.max_retries, self.backoff_s = api_key_env, timeout_s, max_retries, backoff_s
        self.http_client, self.label = http_client, label
        self._own: httpx.Client | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def post(self, path: str, payload: dict[str, Any], *, model: str) -> httpx.Response:
        """The 200 response of ``POST {base_url}/{path}`` (see :func:`post_json`).

        An API that always needs a key (``KEYED_HOSTS``) is not called without one: the
        error comes at once instead of after the retries.
        """
        if httpx.URL(self.base_url).host in KEYED_HOSTS and not (self.api_key_env and os.environ.get(self.api_key_env)):
            raise CrossroadsError(redact_credentials(
                f"{self.label}{self.base_url} needs an API key: put it in "
                f"${self.api_key_env or 'OPENAI_API_KEY'} (or point base_url at a server that needs none)"))
        client = self.http_client
        if client is None:
            if self._own is None:
                self._own = httpx.Client(timeout=self.timeout_s)
            client = self._own
        return post_json(client, self.url(path), payload, model=model, api_key_env=self.api_key_env,
                         max_retries=self.max_retries, backoff_s=self.backoff_s, timeout_s=self.timeout_s,
                         label=self.label)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
