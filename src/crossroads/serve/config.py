"""The server's configuration: the pool of upstream models, named routes, storage and limits.

Read from YAML (``crossroads serve --config crossroads.yaml``) or built in Python; every
mistake is reported with the key that holds it and what would be accepted.  A
commented example: ``docs/serve.md``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from crossroads.checks import check_fraction
from crossroads.data.descriptors import TIERS
from crossroads.errors import CrossroadsError
from crossroads.evaluate.cascade import GROUPS
from crossroads.objective import RULES, Objective, parse_objective
from crossroads.objective.budget import Budget, parse_budget
from crossroads.online import LEARNERS
from crossroads.pretrained import DEFAULT_ROUTER_NAME
from crossroads.upstream.local_model import LOCAL_MODELS
from crossroads.upstream.models import ModelConfig
from crossroads.upstream.providers import PROVIDERS

#: A SQLite file in the working directory (``sqlite:///x`` would be the absolute path ``/x``).
DEFAULT_STORE = "sqlite://crossroads.db"
ROUTE_KEYS = ("none", "session")
ROUTE_ON = ("last_message", "conversation")
TRACE_EXPORTERS = ("otlp", "console")


@dataclass(frozen=True)
class ShadowConfig:
    """A route's shadow traffic: for ``share`` of its requests, other models answer too, in the background.

    Every model of ``models`` (default: all the route's candidates) except the one that served
    is called after the client has its answer; what each did is stored as a shadow outcome,
    never returned.  Once a UTC day's shadow spend of the route reaches ``max_usd_per_day``
    (None: no cap), no more shadow calls that day.  See ``crossroads.serve.shadow``.
    """

    share: float  # share of requests also sent to the other models, in [0, 1]
    models: tuple[str, ...] = ()  # empty: the route's candidates
    max_usd_per_day: float | None = None


@dataclass(frozen=True)
class CascadeConfig:
    """A route that may call several models per request and return the answer its verifier trusts most.

    Cascade routing (:mod:`crossroads.serve.cascade`): the first call is the route's decision,
    each next one the model whose expected gain in quality outweighs its cost under the route's
    objective, given the router's predictions and the answers seen so far.  ``verifier`` is
    ``agreement`` (untrained) or the path of a verifier file (``crossroads train --verifier-out``);
    ``max_calls`` bounds the chain, ``max_cost_usd`` its expected cost per request (None: no
    cap beyond the objective); ``resolve``, ``difficulty`` and ``opening`` are the policy's (see
    :class:`crossroads.evaluate.cascade.CascadeRouting`): with ``opening`` above 1 the first
    call goes to a cheaper model than the router would pick, since a doubtful answer can escalate.
    ``groups`` gives them per answer group (:data:`crossroads.evaluate.cascade.GROUPS`: ``choice-4``,
    ``number`` ..., ``other`` for any group not named), as ``crossroads eval --cascade routing`` calibrates them
    (``setup.cascades.routing_at_97``); see :meth:`settings`.
    """

    verifier: str = "agreement"
    max_calls: int = 3
    max_cost_usd: float | None = None
    resolve: float = 0.5
    difficulty: float = 0.5
    opening: float = 1.0
    groups: dict[str, dict[str, float]] = field(default_factory=dict, hash=False)  # routes stay hashable

    def settings(self, group: str | None) -> dict[str, float]:
        """``resolve``, ``difficulty`` and ``opening`` for a request of answer ``group`` (None: not known yet, as
        before the first answer of a prompt that lists no options): the group's own, else ``other``'s, over the
        route's."""
        own = {"resolve": self.resolve, "difficulty": self.difficulty, "opening": self.opening}
        if group is None:
            return own
        return {**own, **self.groups.get(group, self.groups.get("other", {}))}


@dataclass(frozen=True)
class RouteConfig:
    """A named route: an online learner or a trained router, an objective, and its models.

    ``learner`` (e.g. ``thompson:discount=0.99``) learns from feedback; ``router_file``
    (a saved offline router, or ``default``) decides among its predictions by ``rule``
    (see :mod:`crossroads.objective.rules`: by default the best expected reward under
    ``objective``).  With both, the learner (``linucb`` or ``lints``) starts each decision
    from the router's expected rewards and learns where they are wrong.  ``key: session``
    keeps one learner per session id (PickLLM's sessions).  ``explore`` is the share of
    requests answered by a candidate drawn uniformly instead of the route's choice, so that
    a deterministic route's log still supports off-policy estimates of other policies.
    ``shadow`` (:class:`ShadowConfig`) also calls other models on a share of requests, for
    their outcomes alone.  ``cascade`` (:class:`CascadeConfig`, on a router route) calls
    models in turn and returns the answer its verifier trusts most.
    """

    name: str
    learner: str | None = None
    router_file: str | None = None
    objective: Objective = field(default_factory=Objective)
    rule: str = "reward"
    models: tuple[str, ...] = ()  # empty: the whole pool
    key: str = "none"
    explore: float = 0.0  # share of requests sent to a uniformly drawn candidate, in [0, 1)
    shadow: ShadowConfig | None = None
    budget: Budget | None = None  # US$ per day, week or month, paced or capped (crossroads.serve.budgets)
    cascade: CascadeConfig | None = None  # call models in turn, judge each answer, return the most trusted one


@dataclass(frozen=True)
class RouteLLMConfig:
    """What ``router-<router>-<threshold>`` names mean: a strong/weak pair and router files."""

    strong: str
    weak: str
    routers: dict[str, str] = field(default_factory=dict)  # router name -> saved router file


def _networks(value: Any) -> tuple[str, ...]:
    """``security.trusted_proxies`` checked: a list of IP addresses or CIDR blocks."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise CrossroadsError(f"config: security.trusted_proxies must be a list of addresses or CIDR blocks, "
                              f"got {value!r}")
    for item in items:
        try:
            if not isinstance(item, str):
                raise TypeError(item)
            ipaddress.ip_network(item, strict=False)
        except (TypeError, ValueError):
            raise CrossroadsError(f"config: security.trusted_proxies: {item!r} is not an IP address or CIDR block "
                                  "(e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return tuple(str(item) for item in items)


@dataclass(frozen=True)
class SecurityConfig:
    """Client and admin bearer keys (read from environment variables) and request limits."""

    api_keys_env: str | None = None  # comma-separated client keys; unset or empty: no client auth
    admin_key_env: str | None = None  # admin endpoints are refused while this is unset
    max_body_bytes: int = 1_000_000  # a bigger body gets 413 before it is read whole
    max_messages: int = 2048  # messages in one chat request (OpenAI's own limit)
    max_json_depth: int = 64  # nesting of arrays and objects in a request body
    rate_limit_per_s: float | None = None  # per client key (or per address without keys)
    rate_burst: int = 20
    rate_limit_shared: bool | None = None  # buckets in the store, for every replica; None: when it is PostgreSQL
    max_auth_failures: int = 20  # wrong keys from one address within auth_failure_window_s, then 429
    auth_failure_window_s: float = 60.0
    # proxies (addresses or CIDR blocks) whose X-Forwarded-For names the client; none: the peer's address is used
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_proxies", _networks(self.trusted_proxies))
        for name in ("max_body_bytes", "max_messages", "max_json_depth", "rate_burst", "max_auth_failures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CrossroadsError(f"config: security.{name} must be an integer >= 1, got {value!r}")
        for name in ("rate_limit_per_s", "auth_failure_window_s"):
            value = getattr(self, name)
            if value is None and name == "rate_limit_per_s":
                continue
            if (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not 0 < value < float("inf")):
                raise CrossroadsError(f"config: security.{name} must be a number > 0, got {value!r}")
        if self.rate_limit_shared is not None and not isinstance(self.rate_limit_shared, bool):
            raise CrossroadsError(f"config: security.rate_limit_shared must be true or false, got "
                                  f"{self.rate_limit_shared!r}")

    def client_keys(self) -> set[str]:
        raw = os.environ.get(self.api_keys_env, "") if self.api_keys_env else ""
        return {key.strip() for key in raw.split(",") if key.strip()}

    def admin_key(self) -> str | None:
        return os.environ.get(self.admin_key_env) or None if self.admin_key_env else None


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces of each request (:mod:`crossroads.serve.tracing`): off unless ``enabled``.

    Spans go to an OTLP/HTTP collector at ``endpoint`` or, with ``exporter: console``, to stdout;
    ``sample_ratio`` of the requests are traced.  Needs ``pip install 'crossroads[otel]'``.
    """

    enabled: bool = False
    exporter: str = "otlp"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # OTLP over HTTP (protobuf)
    service_name: str = "crossroads"
    sample_ratio: float = 1.0  # share of requests traced, in [0, 1]

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise CrossroadsError(f"config: tracing.enabled must be true or false, got {self.enabled!r}")
        if self.exporter not in TRACE_EXPORTERS:
            raise CrossroadsError(f"config: tracing.exporter must be one of {', '.join(TRACE_EXPORTERS)}, "
                                  f"got {self.exporter!r}")
        if not isinstance(self.endpoint, str) or not self.endpoint.startswith(("http://", "https://")):
            raise CrossroadsError(f"config: tracing.endpoint must be the http(s) URL of an OTLP/HTTP collector "
                                  f"(e.g. http://127.0.0.1:4318/v1/traces), got {self.endpoint!r}")
        if not isinstance(self.service_name, str) or not self.service_name.strip():
            raise CrossroadsError(f"config: tracing.service_name must be a non-empty string, got "
                                  f"{self.service_name!r}")
        try:
            check_fraction(self.sample_ratio, "sample_ratio")
        except CrossroadsError as error:
            raise CrossroadsError(f"config: tracing.{error} (the share of requests traced, e.g. 0.1)") from None


@dataclass(frozen=True)
class ServeConfig:
    models: tuple[ModelConfig, ...]
    routes: tuple[RouteConfig, ...] = ()
    routellm: RouteLLMConfig | None = None
    default_route: str | None = None  # used when the request names no model
    store: str = DEFAULT_STORE
    store_prompts: bool = False  # privacy: prompts and responses are kept only when True
    store_spool: str | None = None  # rows the store cannot take during an outage; None: beside the SQLite file, or ./
    store_spool_max_mb: float = 100.0  # past this the server answers 503 until the store is back
    # an answer goes out once its decision and outcome are committed (or spooled): a crash loses nothing answered
    ack_after_write: bool = True
    route_on: str = "last_message"
    embedder: str = "minilm-onnx"
    cooldown_s: float = 30.0
    failures_before_cooldown: int = 3
    snapshot_every: int = 50  # feedback applications between learner-state snapshots
    sync_interval_s: float = 0.5  # how often feedback from other replicas is read
    request_deadline_s: float = 30.0  # a chat's whole time, across retries and fallbacks, before it gets 504
    shutdown_timeout_s: float = 10.0  # after SIGTERM, requests in flight get this long before they are cancelled
    security: SecurityConfig = field(default_factory=SecurityConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)

    def __post_init__(self) -> None:
        names = [model.name for model in self.models]
        if not names:
            raise CrossroadsError("config: `models` is empty; list at least one upstream model")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise CrossroadsError(f"config: models {duplicates} are listed more than once")
        routes = [route.name for route in self.routes]
        for route in self.routes:
            if route.name in names:
                raise CrossroadsError(f"config: route {route.name!r} has the name of a model; rename one of them")
            try:
                check_fraction(route.explore, "explore", high_open=True)
            except CrossroadsError as error:
                raise CrossroadsError(f"config: routes.{route.name}: {error} (the share of requests sent to a "
                                      "uniformly drawn candidate, e.g. 0.05)") from None
            for model in route.models:
                if model not in names:
                    raise CrossroadsError(
                        f"config: route {route.name!r} names model {model!r}, which is not in `models` ({', '.join(names)})"
                    )
            if route.shadow is not None:
                _check_shadow(route, names)
            if route.budget is not None and route.budget.floor_model is not None \
                    and route.budget.floor_model not in (list(route.models) or names):
                raise CrossroadsError(f"config: routes.{route.name}.budget: floor_model {route.budget.floor_model!r} "
                                      f"is not among the route's models ({', '.join(route.models or names)})")
        if self.default_route is not None and self.default_route not in routes + names:
            raise CrossroadsError(
                f"config: default_route {self.default_route!r} is neither a route ({', '.join(routes) or 'none'}) "
                f"nor a model"
            )
        if self.routellm is not None:
            for role in ("strong", "weak"):
                if getattr(self.routellm, role) not in names:
                    raise CrossroadsError(
                        f"config: routellm.{role} {getattr(self.routellm, role)!r} is not in `models` ({', '.join(names)})"
                    )
        if (isinstance(self.store_spool_max_mb, bool) or not isinstance(self.store_spool_max_mb, (int, float))
                or not 0 < self.store_spool_max_mb < math.inf):
            raise CrossroadsError(f"config: store_spool_max_mb must be a positive number of megabytes, got "
                                  f"{self.store_spool_max_mb!r}")
        if not isinstance(self.ack_after_write, bool):
            raise CrossroadsError(f"config: ack_after_write must be true or false, got {self.ack_after_write!r}")
        if self.store_spool is not None and not isinstance(self.store_spool, str):
            raise CrossroadsError(f"config: store_spool must be a file path, got {self.store_spool!r}")
        for name in ("request_deadline_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise CrossroadsError(f"config: {name} must be a positive number of seconds, got {value!r}")
        if self.route_on not in ROUTE_ON:
            raise CrossroadsError(f"config: route_on must be one of {', '.join(ROUTE_ON)}, got {self.route_on!r}")

    def model(self, name: str) -> ModelConfig:
        return next(model for model in self.models if model.name == name)

    def unset_variables(self) -> list[str]:
        """The environment variables the config names that are not set, each with what that breaks."""
        needed: dict[str, list[str]] = {}
        for model in self.models:
            if model.api_key_env and not os.environ.get(model.api_key_env):
                needed.setdefault(model.api_key_env, []).append(model.name)
        problems = [f"${name} is not set: {', '.join(models)} will refuse every call until it holds the API key"
                    for name, models in needed.items()]
        security = self.security
        if security.api_keys_env and not security.client_keys():
            problems.append(f"${security.api_keys_env} is not set or empty: clients need no key")
        if security.admin_key_env and not security.admin_key():
            problems.append(f"${security.admin_key_env} is not set: the admin endpoints are off")
        return problems

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]


def load_config(path: str | Path) -> ServeConfig:
    """The configuration in the YAML file at ``path``."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CrossroadsError(f"config file {path} does not exist; see docs/serve.md for an example") from None
    except yaml.YAMLError as error:
        raise CrossroadsError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise CrossroadsError(f"config file {path} must hold a mapping with `models:` (and optionally `routes:`)")
    try:
        return parse_config(raw)
    except CrossroadsError as error:
        raise CrossroadsError(f"{path}: {error}") from None


def parse_config(raw: dict[str, Any]) -> ServeConfig:
    """A ServeConfig from the plain mapping a YAML file holds."""
    raw = dict(raw)
    models = tuple(_model(item, i) for i, item in enumerate(_list(raw.pop("models", None), "models")))
    routes_raw = raw.pop("routes", None) or {}
    if not isinstance(routes_raw, dict):
        raise CrossroadsError("config: `routes` must map route names to settings, e.g. `auto: {learner: thompson}`")
    routes = tuple(_route(name, item) for name, item in routes_raw.items())
    routellm = raw.pop("routellm", None)
    if routellm is not None:
        routellm = RouteLLMConfig(**_only(routellm, RouteLLMConfig, "routellm"))
    security = SecurityConfig(**_only(raw.pop("security", None) or {}, SecurityConfig, "security"))
    tracing = TracingConfig(**_only(raw.pop("tracing", None) or {}, TracingConfig, "tracing"))
    top = _only(raw, ServeConfig, "config")
    if not routes and top.get("default_route") is None and len(models) > 1:  # nothing said: route among them
        routes, top["default_route"] = (pretrained_route(Objective(quality=1, cost=0.5)),), DEFAULT_ROUTE
    return ServeConfig(models=models, routes=routes, routellm=routellm, security=security, tracing=tracing,
                       **top)


#: The route a pool gets when its config declares none (and the embedded default's): ``auto``.
DEFAULT_ROUTE = "auto"
DEFAULT_LEARNER = "linucb"


def pretrained_route(objective: Objective) -> RouteConfig:
    """``auto``: the pretrained default router's predictions (any model, placed by its price and tier), with a
    learner on top that starts each decision from them and learns from feedback."""
    return RouteConfig(name=DEFAULT_ROUTE, router_file=DEFAULT_ROUTER_NAME, learner=DEFAULT_LEARNER,
                       objective=objective)


def _model(item: Any, index: int) -> ModelConfig:
    where = f"models[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise CrossroadsError(f"config: {where} needs a `name` (the model name clients and routes use)")
    values = _only(item, ModelConfig, where)
    model = ModelConfig(**values)
    where = f"models[{index}] ({model.name})"
    if model.provider not in PROVIDERS:
        raise CrossroadsError(f"config: {where}: provider must be one of {', '.join(PROVIDERS.names)}, "
                              f"got {model.provider!r}")
    for name in ("price_per_mtok_in", "price_per_mtok_out", "timeout_s"):
        value = getattr(model, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise CrossroadsError(f"config: {where}: {name} must be a number >= 0, got {value!r}")
    if not isinstance(model.max_retries, int) or model.max_retries < 0:
        raise CrossroadsError(f"config: {where}: max_retries must be an integer >= 0, got {model.max_retries!r}")
    if model.api_key_env is not None and (not isinstance(model.api_key_env, str) or not model.api_key_env.isidentifier()):
        raise CrossroadsError(
            f"config: {where}: api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
            "never the key itself"
        )
    if model.tier is not None and model.tier not in TIERS:
        raise CrossroadsError(f"config: {where}: tier must be one of {', '.join(TIERS)}, got {model.tier!r}")
    if model.local is not False and model.local is not True and model.local not in LOCAL_MODELS:
        raise CrossroadsError(f"config: {where}: local must be true or one of {', '.join(LOCAL_MODELS)}, "
                              f"got {model.local!r}")
    if not isinstance(model.defaults, dict):
        raise CrossroadsError(f"config: {where}: defaults must map request fields to values, e.g. {{max_tokens: 256}}")
    if not model.upstream_model:
        model = ModelConfig(**{**values, "upstream_model": model.name})
    return model


def _route(name: Any, item: Any) -> RouteConfig:
    if not isinstance(name, str) or not name.strip():
        raise CrossroadsError(f"config: route names must be non-empty strings, got {name!r}")
    if not isinstance(item, dict):
        raise CrossroadsError(f"config: routes.{name} must be a mapping such as {{learner: thompson}}")
    values = _only(item, RouteConfig, f"routes.{name}")
    if "name" in values:
        raise CrossroadsError(f"config: routes.{name}: a route's name is its key under `routes`; drop `name`")
    learner, router_file = values.get("learner"), values.get("router_file")
    if learner is None and router_file is None:
        raise CrossroadsError(f"config: routes.{name} needs a `learner`, a `router_file`, or both (a learner that "
                              "starts from the router's predictions)")
    if router_file is not None and (not isinstance(router_file, str) or not router_file.strip()):
        raise CrossroadsError(f"config: routes.{name}.router_file must be the path of a router file written by "
                              f"`crossroads train --out`, or `default`; got {router_file!r}")
    try:  # a wrong learner, rule or objective fails now, not at the first request
        if learner is not None:
            spec = LEARNERS.spec(str(learner))
            values["learner"] = spec.label
            if router_file is not None and not LEARNERS.load(spec.name).takes_prior:
                raise CrossroadsError(f"the {spec.name} learner cannot start from a router's predictions; put "
                                      "linucb or lints on top of `router_file`, or drop one of them")
        elif "rule" in values:
            values["rule"] = RULES.spec(str(values["rule"])).label
        if "objective" in values:
            values["objective"] = parse_objective(values["objective"])
    except CrossroadsError as error:
        raise CrossroadsError(f"config: routes.{name}: {error}") from None
    if learner is not None and "rule" in values:
        raise CrossroadsError(f"config: routes.{name}: `rule` decides among a router's predictions; on a learner "
                              "route the learner decides (drop `rule`)")
    values["models"] = tuple(_list(values.get("models", []), f"routes.{name}.models"))
    if "shadow" in values:
        values["shadow"] = _shadow(name, values["shadow"])
    if values.get("budget") is not None:
        try:
            values["budget"] = parse_budget(values["budget"])
        except CrossroadsError as error:
            raise CrossroadsError(f"config: routes.{name}.budget: {error}") from None
    if values.get("cascade") is not None:
        values["cascade"] = _cascade(name, values["cascade"], values)
    if values.get("key", "none") not in ROUTE_KEYS:
        raise CrossroadsError(f"config: routes.{name}.key must be one of {', '.join(ROUTE_KEYS)}")
    return RouteConfig(name=name, **values)


def _cascade(name: str, item: Any, route: dict[str, Any]) -> CascadeConfig:
    """``routes.<name>.cascade`` checked against the rest of its route (``route``, already parsed)."""
    where = f"config: routes.{name}.cascade"
    values = _only({} if item is True else item, CascadeConfig, f"routes.{name}.cascade")
    if route.get("router_file") is None or route.get("learner") is not None:
        raise CrossroadsError(f"{where}: a cascade starts from a router's predictions and decides by itself: set "
                              "`router_file` (e.g. default) and no `learner`")
    if "rule" in route:
        raise CrossroadsError(f"{where}: a cascade chooses by the route's objective; drop `rule`")
    objective = route.get("objective") or Objective()
    if objective.latency or not objective.quality:
        raise CrossroadsError(f"{where}: a cascade weighs quality against cost; the objective {objective} must weigh "
                              "quality and not latency (a chain's latency is the sum of its calls)")
    verifier = values.get("verifier", "agreement")
    if not isinstance(verifier, str) or not (verifier == "agreement" or Path(verifier).is_file()):
        raise CrossroadsError(f"{where}.verifier must be `agreement` or the path of a verifier file written by "
                              f"`crossroads train --verifier-out`; got {verifier!r}")
    calls = values.get("max_calls", 3)
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise CrossroadsError(f"{where}.max_calls must be an integer >= 1 (models called per request), got {calls!r}")
    cap = values.get("max_cost_usd")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < math.inf):
        raise CrossroadsError(f"{where}.max_cost_usd must be a positive number of US$ per request, got {cap!r}")
    _policy_settings(where, values)
    groups = values.get("groups") or {}
    if not isinstance(groups, dict):
        raise CrossroadsError(f"{where}.groups must map answer groups ({', '.join(GROUPS)}) to settings, e.g. "
                              "{choice-4: {opening: 16, resolve: 0.25}}")
    for group, settings in groups.items():
        if group not in GROUPS:
            raise CrossroadsError(f"{where}.groups: unknown answer group {group!r}; groups: {', '.join(GROUPS)}")
        known = {"resolve", "difficulty", "opening"}
        if not isinstance(settings, dict) or set(settings) - known:
            raise CrossroadsError(f"{where}.groups.{group} must set some of {', '.join(sorted(known))}, got "
                                  f"{settings!r}")
        _policy_settings(f"{where}.groups.{group}", settings)
    values["groups"] = {str(group): {key: float(value) for key, value in settings.items()}
                        for group, settings in groups.items()}
    return CascadeConfig(**values)


def _policy_settings(where: str, values: dict[str, Any]) -> None:
    """Check the cascade policy's ``resolve``, ``difficulty`` and ``opening`` in ``values`` (those present)."""
    for key in ("resolve", "difficulty"):
        value = values.get(key, 0.5)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise CrossroadsError(f"{where}.{key} must be a number in [0, 1], got {value!r}")
    opening = values.get("opening", 1.0)
    if isinstance(opening, bool) or not isinstance(opening, (int, float)) or not 1 <= opening < math.inf:
        raise CrossroadsError(f"{where}.opening must be a number >= 1 (how many times the cost weighs in the first "
                              f"call's choice; 1: the router's pick), got {opening!r}")


def _shadow(name: str, item: Any) -> ShadowConfig | None:
    if item is None:
        return None
    where = f"routes.{name}.shadow"
    values = _only(item, ShadowConfig, where)
    if "share" not in values:
        raise CrossroadsError(f"config: {where} needs a `share`: the share of requests also sent to the other "
                              "models, e.g. {share: 0.02}")
    if "models" in values:
        values["models"] = tuple(_list(values["models"], f"{where}.models"))
    return ShadowConfig(**values)


def _check_shadow(route: RouteConfig, names: list[str]) -> None:
    """The checks of ``route.shadow`` (``names``: the pool's models), as config errors."""
    shadow, where = route.shadow, f"config: routes.{route.name}.shadow"
    assert shadow is not None
    try:
        check_fraction(shadow.share, "share")
    except CrossroadsError as error:
        raise CrossroadsError(f"{where}: {error} (the share of requests also sent to the other models, "
                              "e.g. 0.02)") from None
    cap = shadow.max_usd_per_day
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap)
                            or cap < 0):
        raise CrossroadsError(f"{where}: max_usd_per_day must be a number >= 0 (US$ a UTC day of shadow calls may "
                              f"cost; leave it out for no cap), got {cap!r}")
    pool = list(route.models) or names
    for model in shadow.models:
        if model not in names:
            raise CrossroadsError(f"{where}: models names {model!r}, which is not in `models` ({', '.join(names)})")
        if model not in pool:
            raise CrossroadsError(f"{where}: models names {model!r}, which is not among the route's models "
                                  f"({', '.join(pool)}); add it to routes.{route.name}.models or drop it here")
    duplicates = sorted({model for model in shadow.models if shadow.models.count(model) > 1})
    if duplicates:
        raise CrossroadsError(f"{where}: models {duplicates} are listed more than once")


def _only(values: Any, cls: type, where: str) -> dict[str, Any]:
    """``values``, each key a field of ``cls``; an unknown key is an error listing every field."""
    if not isinstance(values, dict):
        raise CrossroadsError(f"config: {where} must be a mapping")
    every = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - every)
    if unknown:
        raise CrossroadsError(f"config: {where} has unknown keys {unknown}; known keys: {', '.join(sorted(every))}")
    return dict(values)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CrossroadsError(f"config: `{where}` must be a list")
    return value
