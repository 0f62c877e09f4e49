"""A chat-completions request as crossroads reads it: what to route on, and the user's overrides.

Per-request overrides travel in the body under ``"crossroads"`` (the OpenAI SDK sends
them with ``extra_body={"crossroads": {...}}``) and are removed before the body goes
upstream; every other field passes through untouched.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.objective import Objective, parse_objective
from crossroads.objective.cost import estimate_tokens

OVERRIDE_KEYS = ("allowed_models", "category", "max_cost_usd", "objective", "session_id")
#: The longest model name, session id, category or decision id a request may carry.
MAX_NAME_CHARS = 256


class BadRequest(CrossroadsError):
    """The client's request is malformed; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class Overrides:
    allowed_models: tuple[str, ...] | None = None
    max_cost_usd: float | None = None
    objective: Objective | None = None
    session_id: str | None = None
    #: The task the request belongs to (e.g. an MMLU subject, an app feature), for routers that read it.
    category: str | None = None


@dataclass(frozen=True)
class ChatRequest:
    """``body`` is what goes upstream (minus ``model``, set per upstream); ``text`` is what routers read."""

    model: str | None
    body: dict[str, Any]
    text: str
    stream: bool
    overrides: Overrides
    #: A sha256 hex digest of the client key that sent it (None without client keys): only it may send feedback.
    client: str | None = None
    #: The virtual key that sent it and that key's team (see :mod:`crossroads.serve.keys`), recorded with its decision.
    key_id: str | None = None
    team: str | None = None
    #: The scopes (``key:ID``, ``team:NAME``) of that key's and team's ``pace`` budgets (see serve/budgets.py).
    payers: tuple[str, ...] = ()
    #: The caller's address (the client's, as a trusted proxy names it, behind one).
    address: str | None = None

    @property
    def caller(self) -> str:
        """Who sent it, to share work among callers fairly: its virtual key, else its client key, else its address."""
        if self.key_id:
            return f"key:{self.key_id}"
        if self.client:
            return f"client:{self.client}"
        return f"address:{self.address}"


class BadJSON(BadRequest):
    """The body is not JSON crossroads can take: malformed, too deep, non-finite numbers, or not valid Unicode."""


def parse_json_body(raw: bytes | str, max_depth: int) -> Any:
    """The JSON value of a request body, refusing what would break later or upstream with :class:`BadJSON`.

    Refused: malformed JSON; ``NaN`` and ``Infinity`` (Python's json reads them, but they
    are not JSON and every upstream rejects them); numbers beyond a float's range (they
    overflow wherever they are used as numbers); nesting deeper than ``max_depth``; and
    text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which no
    database or upstream can encode).
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_finite_int)
    except BadJSON:
        raise
    except RecursionError:
        raise BadJSON(f"the request body nests arrays or objects too deeply (at most {max_depth} levels)") from None
    except ValueError as error:
        raise BadJSON(f"the request body is not valid JSON ({error})") from None
    check_json_value(value, max_depth)
    return value


def check_json_value(value: Any, max_depth: int) -> None:
    """Raise BadJSON if ``value`` nests deeper than ``max_depth`` or holds a lone surrogate (in a key or a string)."""
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                raise BadJSON(f"{_where(where)} holds text that is not valid Unicode (a lone surrogate such as "
                              "\\ud800): send UTF-8 text, escaping only whole surrogate pairs", _where(where, None))
        elif isinstance(item, (dict, list)):
            if depth >= max_depth:
                raise BadJSON(f"the request body nests arrays or objects more than {max_depth} levels deep "
                              f"(at {_where(where)})", _where(where, None))
            if isinstance(item, dict):
                for key, child in item.items():
                    stack.append((key, where, depth))
                    stack.append((child, (where, key), depth + 1))
            else:
                stack.extend((child, (where, i), depth + 1) for i, child in enumerate(item))


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate: UTF-8 cannot encode one (about 50x faster than a regex on 1 MB)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _where(where: Any, top: str | None = "the request body") -> str | None:
    """``messages[0].content`` (in backticks unless ``top`` is None) for the linked path
    ``(((None, "messages"), 0), "content")``; ``top`` for the body itself."""
    parts: list[Any] = []
    while where is not None:
        where, key = where
        parts.append(key)
    if not parts:
        return top
    path = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in reversed(parts)).lstrip(".")
    path = path.encode("utf-8", "backslashreplace").decode("utf-8")  # a key may be the lone surrogate itself
    return path if top is None else f"`{path}`"


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"the request body holds `{name}`, which is not a JSON number: send finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"the number {text[:40]} in the request body is out of range: send numbers within "
                      f"+-{sys.float_info.max:.3g}")
    return value


def _finite_int(text: str) -> int:
    value = int(text) if len(text) <= 400 else None
    if value is None or abs(value) > sys.float_info.max:
        raise BadJSON(f"the integer {text[:20]}... in the request body ({len(text)} digits) is out of range: send "
                      f"numbers within +-{sys.float_info.max:.3g}")
    return value


def parse_chat_request(body: Any, route_on: str = "last_message", max_messages: int | None = None) -> ChatRequest:
    """Check an OpenAI chat-completions body and split it into routing inputs and the upstream body."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with `model` and `messages`")
    body = dict(body)
    overrides = parse_overrides(body.pop("crossroads", None))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` is missing or empty: send a list of {role, content} messages", "messages")
    if max_messages is not None and len(messages) > max_messages:
        raise BadRequest(f"`messages` holds {len(messages)} messages, more than the {max_messages} this server takes "
                         "(security.max_messages): send a shorter conversation", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a `role`", f"messages[{i}]")
        check_content(message.get("content"), f"messages[{i}].content")
    model = body.pop("model", None)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise BadRequest("`model` must be a non-empty string: a route, a router-<router>-<threshold> name or a model", "model")
    if model is not None and len(model) > MAX_NAME_CHARS:
        raise BadRequest(f"`model` is {len(model)} characters long; names have at most {MAX_NAME_CHARS}", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be true or false", "stream")
    return ChatRequest(model=model, body=body, text=routing_text(messages, route_on), stream=stream, overrides=overrides)


def check_content(content: Any, where: str) -> None:
    """Refuse a message ``content`` no upstream would take: not text, null, or a list of typed parts."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(f"{where} must be a string or a list of content parts such as "
                         '{"type": "text", "text": "..."}', where)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequest(f"{where}[{j}] must be an object with a `type`, such as "
                             '{"type": "text", "text": "..."}', f"{where}[{j}]")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}[{j}].text must be a string (the part's text)", f"{where}[{j}].text")


def routing_text(messages: list[dict[str, Any]], route_on: str) -> str:
    """The text routers read: the last user message, or the whole conversation with roles."""
    if route_on == "conversation":
        return "\n".join(f"{m['role']}: {text}" for m in messages if (text := message_text(m)))
    users = [m for m in messages if m.get("role") == "user"] or messages
    return message_text(users[-1])


def message_text(message: dict[str, Any]) -> str:
    """The text of a message; of multi-part content (text, images ...) only the text parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""


def parse_overrides(raw: Any) -> Overrides:
    if raw is None:
        return Overrides()
    if not isinstance(raw, dict):
        raise BadRequest("`crossroads` must be an object of routing overrides", "crossroads")
    unknown = sorted(set(raw) - set(OVERRIDE_KEYS))
    if unknown:
        raise BadRequest(f"unknown routing overrides {unknown}; known: {', '.join(OVERRIDE_KEYS)}", "crossroads")
    allowed = raw.get("allowed_models")
    if allowed is not None:
        if (not isinstance(allowed, list) or not allowed
                or not all(isinstance(m, str) and len(m) <= MAX_NAME_CHARS for m in allowed)):
            raise BadRequest("crossroads.allowed_models must be a non-empty list of model names", "crossroads.allowed_models")
        allowed = tuple(allowed)
    cap = raw.get("max_cost_usd")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap) or cap < 0):
        raise BadRequest("crossroads.max_cost_usd must be a number >= 0 (US$ per request)", "crossroads.max_cost_usd")
    objective = raw.get("objective")
    if objective is not None:
        try:
            objective = parse_objective(objective if isinstance(objective, dict) else str(objective))
        except CrossroadsError as error:
            raise BadRequest(f"crossroads.objective: {error}", "crossroads.objective") from None
    session = raw.get("session_id")
    if session is not None and (not isinstance(session, str) or not session or len(session) > MAX_NAME_CHARS):
        raise BadRequest(f"crossroads.session_id must be a non-empty string of at most {MAX_NAME_CHARS} characters",
                         "crossroads.session_id")
    category = raw.get("category")
    if category is not None and (not isinstance(category, str) or not category or len(category) > MAX_NAME_CHARS):
        raise BadRequest(f"crossroads.category must be a non-empty string (at most {MAX_NAME_CHARS} characters) "
                         "naming the request's task, as in the router's training data", "crossroads.category")
    return Overrides(allowed, None if cap is None else float(cap), objective, session, category)


def prompt_tokens(request: ChatRequest) -> int:
    """The request's messages in tokens, estimated from their text."""
    return sum(estimate_tokens(message_text(m)) for m in request.body.get("messages", []))


def answer_tokens(usage: dict[str, Any], request: ChatRequest, text: str) -> tuple[int, int]:
    """Tokens in and out of an answer to ``request``: the upstream's reported usage, else estimated from the texts."""
    tokens_in, tokens_out = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return (prompt_tokens(request) if tokens_in is None else tokens_in,
            estimate_tokens(text) if tokens_out is None else tokens_out)


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None
