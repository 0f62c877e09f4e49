"""The web dashboard at ``/ui``: one page from the package (``serve/ui/``) over JSON endpoints under ``/ui/api``.

The page holds no data: it asks for a key and sends it as a bearer token to the endpoints.
The admin key sees everything and manages keys and teams (through the admin endpoints of
:mod:`crossroads.serve.keys_api`); a team's virtual key sees that team's decisions only.
Figures come from the code behind ``crossroads report`` (:func:`crossroads.evaluate.report.build_report`)
and ``/metrics`` (this process's Prometheus registry), so the three agree.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crossroads.errors import CrossroadsError
from crossroads.evaluate.report import build_report
from crossroads.evaluate.traffic import load_traffic
from crossroads.serve.keys import KeyRefused
from crossroads.serve.requests import BadRequest
from crossroads.store.decision_log import decision_detail, search_decisions
from crossroads.store.keys import period, store_keys

#: The page's files, served from the package; nothing is fetched from elsewhere.
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
#: A report the dashboard built is reused this long (seconds, from when it is ready) for the same window, so that
#: views and reloads do not each read the whole store.
REPORT_TTL_S = 5.0
#: Bootstrap replicates of the dashboard's intervals (``crossroads report``'s default, so the figures agree).
REPORT_REPLICATES = 200
#: Timestamps of the budget burn-down.
BURN_DOWN_POINTS = 48
#: Metrics read off this process's registry for the overview, by the name the page shows them under.
LIVE_METRICS = {"decisions": "crossroads_decisions_total", "cost_usd": "crossroads_cost_usd_total",
                "upstream_errors": "crossroads_upstream_errors_total", "fallbacks": "crossroads_fallbacks_total",
                "feedback": "crossroads_feedback_total"}


@dataclass(frozen=True)
class Viewer:
    """Who looks: the admin (``team`` None) or a team, through one of its virtual keys."""

    team: str | None
    key: Any = None

    @property
    def admin(self) -> bool:
        return self.team is None


class Dashboard:
    """The handlers; ``server`` is the app's ``Server`` (its guards, body reader and gateway)."""

    def __init__(self, server: Any):
        self.server = server
        self._reports: dict[tuple, tuple[float, dict[str, Any]]] = {}
        self._building: dict[tuple, Future] = {}  # the reports being built, by window
        self._reports_lock = threading.Lock()

    def endpoints(self) -> list[tuple[str, str, Any, list[str]]]:
        return [
            ("/ui", "ui", self.page, ["GET"]),
            ("/ui/api/me", "ui_me", self.me, ["GET"]),
            ("/ui/api/report", "ui_report", self.report, ["GET"]),
            ("/ui/api/learners", "ui_learners", self.learners, ["GET"]),
            ("/ui/api/budgets", "ui_budgets", self.budgets, ["GET"]),
            ("/ui/api/decisions", "ui_decisions", self.decisions, ["GET"]),
            ("/ui/api/decisions/{decision_id}", "ui_decision", self.decision, ["GET"]),
            ("/ui/api/playground", "ui_playground", self.playground, ["POST"]),
            ("/ui/{asset}", "ui_asset", self.asset, ["GET"]),
        ]

    @property
    def gateway(self) -> Any:
        return self.server.gateway

    # -- the page -------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                        headers={"cache-control": "no-cache", "x-frame-options": "DENY",
                                 "content-security-policy": "default-src 'self'; img-src 'self' data:"})

    async def asset(self, request: Request) -> Response:
        name = request.path_params["asset"]
        if name not in ASSETS:
            return JSONResponse({"error": {"message": f"no dashboard file {name!r}; the dashboard is at /ui",
                                           "type": "invalid_request_error", "param": None, "code": "not_found"}},
                                status_code=404)
        return Response(_asset(name), media_type=ASSETS[name], headers={"cache-control": "no-cache"})

    # -- who is looking -----------------------------------------------------------------------
    async def viewer(self, request: Request) -> Viewer:
        """The admin (the admin key) or a team (one of its virtual keys); 401/403 for anyone else."""
        if self.server.sends_admin_key(request):
            await self.server.client(request, admin=True)
            return Viewer(None)
        await self.server.client(request)
        key = getattr(request.state, "key", None)
        if key is None:
            how = ("" if self.server.config.security.admin_key() is not None else "; this server has no admin key: "
                   "put one in the environment variable named by security.admin_key_env")
            raise KeyRefused(403, "the dashboard needs the admin key or a team's virtual key (crossroads keys "
                             f"create) as a bearer token{how}", "permission_error", "dashboard_key_required")
        return Viewer(key.team, key)

    async def me(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        config = self.server.config
        routes = [route.name for route in config.routes]
        if viewer.key is not None and viewer.key.routes is not None:
            routes = [r for r in routes if r in viewer.key.routes]
        return JSONResponse({"admin": viewer.admin, "team": viewer.team,
                             "key": None if viewer.key is None else {"name": viewer.key.name,
                                                                     "prefix": viewer.key.prefix},
                             "routes": routes, "models": config.model_names,
                             "store_prompts": bool(getattr(config, "store_prompts", False))})

    # -- overview and routing impact ----------------------------------------------------------
    async def report(self, request: Request) -> Response:
        """``crossroads report``'s figures for the window asked for, and this process's counters from ``/metrics``."""
        viewer = await self.viewer(request)
        window = {"route": request.query_params.get("route") or None,
                  "since_s": _number(request, "since_s"), "until_s": _number(request, "until_s"),
                  "team": viewer.team}
        try:
            report = await anyio.to_thread.run_sync(lambda: self._report(window))
        except CrossroadsError as error:
            if "holds no decision" not in str(error):
                raise
            report = {"empty": str(error)}
        return JSONResponse({"report": report, "live": self.live() if viewer.admin else None})

    def _report(self, window: dict[str, Any]) -> dict[str, Any]:
        """The window's report: cached, or being built for another request (wait for it), or built now.

        Built through the store's reader (a second connection), so that a report reading a million decisions never
        makes writes or the readiness probe wait.  The reader serves one query at a time, so reports of different
        windows read the store one after the other; each window's is built once, however many ask for it meanwhile.
        """
        key = tuple(sorted(window.items()))
        with self._reports_lock:
            hit = self._reports.get(key)
            if hit is not None and time.monotonic() - hit[0] < REPORT_TTL_S:
                return hit[1]
            building = self._building.get(key)
            if building is None:
                building = self._building[key] = Future()
                builder = True
            else:
                builder = False
        if not builder:
            return building.result()  # or raises what building it raised
        try:
            report = build_report(self.gateway.store.reader(), replicates=REPORT_REPLICATES, **window)
        except BaseException as error:
            with self._reports_lock:
                del self._building[key]
            building.set_exception(error)
            raise
        with self._reports_lock:
            now = time.monotonic()
            self._reports = {k: v for k, v in self._reports.items() if now - v[0] < REPORT_TTL_S}
            self._reports[key] = (now, report)
            del self._building[key]
        building.set_result(report)
        return report

    def live(self) -> dict[str, Any]:
        """This process's counters since it started, summed over their labels, as ``/metrics`` shows them."""
        totals = {name: 0.0 for name in LIVE_METRICS}
        by_model: dict[str, float] = {}
        for family in self.gateway.metrics.registry.collect():
            for sample in family.samples:
                for name, metric in LIVE_METRICS.items():
                    if sample.name == metric:
                        totals[name] += sample.value
                if sample.name == LIVE_METRICS["decisions"]:
                    model = sample.labels.get("model", "?")
                    by_model[model] = by_model.get(model, 0.0) + sample.value
        return {**totals, "decisions_by_model": by_model}

    async def learners(self, request: Request) -> Response:
        """Each learner route's current view of its models: the chance each is picked and its estimated reward."""
        viewer = await self.viewer(request)
        if not viewer.admin:
            return JSONResponse({"routes": {}, "note": "learners learn from every team's traffic: admin only"})
        return JSONResponse({"routes": await anyio.to_thread.run_sync(self._learners)})

    def _learners(self) -> dict[str, Any]:
        learners, routes = self.gateway.learners, self.server.config.routes
        views = {}
        for route in routes:
            if route.learner is None:
                continue
            learner = learners.learner(route.name, None)
            models = list(route.models) or self.server.config.model_names
            view: dict[str, Any] = {"learner": route.learner, "steps": int(getattr(learner, "steps_", 0))}
            if learners.learner_type(route.name).contextual:
                view["note"] = "contextual: its choice depends on the prompt (try the playground)"
            else:
                decision = learner.clone().select(models)
                view["models"] = {m: {"probability": decision.probabilities.get(m),
                                      "estimate": (decision.scores or {}).get(m)} for m in models}
            views[route.name] = view
        return views

    # -- budgets ------------------------------------------------------------------------------
    async def budgets(self, request: Request) -> Response:
        """Route budgets with their burn-down (admin), teams and keys with their budgets and spend this period."""
        viewer = await self.viewer(request)
        routes = await anyio.to_thread.run_sync(self._route_budgets) if viewer.admin else []
        keys = await anyio.to_thread.run_sync(lambda: self._key_budgets(viewer.team))
        teams = await anyio.to_thread.run_sync(store_keys(self.gateway.store).teams)
        return JSONResponse({"routes": routes, "teams": [team for team in teams if viewer.admin or
                                                         team["name"] == viewer.team], "keys": keys})

    def _route_budgets(self) -> list[dict[str, Any]]:
        budgets = self.gateway.routes.budgets
        if budgets is None:
            return []
        now = time.time()
        views = []
        for route, budget in budgets.budgets.items():
            start, end = budget.period(now)
            controller = budgets.controllers[route]
            traffic = load_traffic(self.gateway.store.traffic(route=route, since_s=start, until_s=end))
            times = np.sort(np.append(np.linspace(start, end, BURN_DOWN_POINTS), now))  # the target runs to the end
            cumulative = np.concatenate([[0.0], np.cumsum(np.nan_to_num(traffic.cost_usd))])
            spent = [float(cumulative[np.searchsorted(traffic.created_s, t, side="right")]) if t <= now else None
                     for t in times]  # the spend, up to now
            fractions = (times - start) / (end - start)
            views.append({"route": route, "usd": budget.usd, "per": budget.per, "mode": budget.mode,
                          "floor_model": budget.floor_model, "period_start_s": start, "period_end_s": end,
                          "spent_usd": budgets.spent_usd(route, now),
                          "willingness_to_pay": controller.willingness_to_pay,
                          "burn_down": {"time_s": times.tolist(), "spent_usd": spent,
                                        "target_usd": (budget.usd * controller.profile.cumulative(fractions)).tolist()}})
        return views

    def _key_budgets(self, team: str | None) -> list[dict[str, Any]]:
        keys = store_keys(self.gateway.store)
        now = time.time()
        views = []
        for key in keys.all(team):
            entry = key.to_dict(now)
            if key.budget is not None:
                _, start, end = period(key.budget.per, now)
                entry["spent_usd"] = keys.spent(key.key_id, key.budget.per, now)
                entry["period_start_s"], entry["period_end_s"] = start, end
            views.append(entry)
        return views

    # -- decisions ----------------------------------------------------------------------------
    async def decisions(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        page, per_page = (_number(request, name) for name in ("page", "per_page"))
        page, per_page = int(1 if page is None else page), int(50 if per_page is None else per_page)
        found = await anyio.to_thread.run_sync(lambda: search_decisions(
            self.gateway.store, query=request.query_params.get("q") or None,
            route=request.query_params.get("route") or None, team=viewer.team,
            cursor=request.query_params.get("cursor") or None, page=page, per_page=per_page))
        return JSONResponse(found)

    async def decision(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        decision_id = request.path_params["decision_id"]
        detail = await anyio.to_thread.run_sync(lambda: decision_detail(self.gateway.store, decision_id, viewer.team))
        return JSONResponse(detail)

    # -- playground ---------------------------------------------------------------------------
    async def playground(self, request: Request) -> Response:
        """What each route would decide for a prompt and expects of each model, without calling any."""
        viewer = await self.viewer(request)
        body = await self.server.json_body(request)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest('send {"prompt": "some text"} (and optionally "category")', "prompt")
        category = body.get("category")
        if category is not None and not isinstance(category, str):
            raise BadRequest("`category` must be a string", "category")
        routes = [route.name for route in self.server.config.routes]
        if viewer.key is not None and viewer.key.routes is not None:
            routes = [r for r in routes if r in viewer.key.routes]
        previews = await anyio.to_thread.run_sync(
            lambda: [self.gateway.routes.preview(name, prompt, category) for name in routes])
        return JSONResponse({"routes": previews})


def _asset(name: str) -> bytes:
    return resources.files("crossroads.serve").joinpath("ui", name).read_bytes()


def _number(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"query parameter {name}={text!r} is not a number", name) from None
    if not np.isfinite(value):
        raise BadRequest(f"query parameter {name} must be finite", name)
    return value
