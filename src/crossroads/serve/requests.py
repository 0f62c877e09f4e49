"""A chat-completions request as crossroads reads it: what to route on, and the user's overrides.

Per-request overrides travel in the body under ``"crossroads"`` (the OpenAI SDK sends
them with ``extra_body={"crossroads": {...}}``) and are removed before the body goes
upstream; every other field passes through untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.objective import Objective, parse_objective

OVERRIDE_KEYS = ("allowed_models", "category", "max_cost_usd", "objective", "session_id")


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


def parse_chat_request(body: Any, route_on: str = "last_message") -> ChatRequest:
    """Check an OpenAI chat-completions body and split it into routing inputs and the upstream body."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object with `model` and `messages`")
    body = dict(body)
    overrides = parse_overrides(body.pop("crossroads", None))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` is missing or empty: send a list of {role, content} messages", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a `role`", f"messages[{i}]")
    model = body.pop("model", None)
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise BadRequest("`model` must be a non-empty string: a route, a router-<router>-<threshold> name or a model", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be true or false", "stream")
    return ChatRequest(model=model, body=body, text=routing_text(messages, route_on), stream=stream, overrides=overrides)


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
        if not isinstance(allowed, list) or not allowed or not all(isinstance(m, str) for m in allowed):
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
    if session is not None and (not isinstance(session, str) or not session):
        raise BadRequest("crossroads.session_id must be a non-empty string", "crossroads.session_id")
    category = raw.get("category")
    if category is not None and (not isinstance(category, str) or not category):
        raise BadRequest("crossroads.category must be a non-empty string naming the request's task, "
                         "as in the router's training data", "crossroads.category")
    return Overrides(allowed, None if cap is None else float(cap), objective, session, category)
