"""Prometheus metrics of one server: requests, decisions, upstream latency, tokens, cost, errors.

Each app has its own registry, so several apps in one process (tests, the Python
client) never mix their counts.  Labels carry route and model names only, never keys
or prompts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("crossroads_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.decisions = Counter("crossroads_decisions", "routing decisions by route and chosen model", ["route", "model"], registry=r)
        self.upstream_latency = Histogram("crossroads_upstream_latency_seconds", "upstream call time, total",
                                          ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.time_to_first_token = Histogram("crossroads_time_to_first_token_seconds", "streamed calls: time to first chunk",
                                             ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.tokens = Counter("crossroads_tokens", "tokens by model and direction (in, out)", ["model", "direction"], registry=r)
        self.cost = Counter("crossroads_cost_usd", "cost in US$ computed from usage and the pool's prices", ["model"], registry=r)
        self.errors = Counter("crossroads_upstream_errors", "failed upstream calls by model and kind", ["model", "kind"], registry=r)
        self.fallbacks = Counter("crossroads_fallbacks", "calls that moved on to the next model", ["from_model", "to_model"], registry=r)
        self.feedback = Counter("crossroads_feedback", "feedback received, by route", ["route"], registry=r)
        # shadow calls (crossroads.serve.shadow): other models answering in the background, never returned
        self.shadow_calls = Counter("crossroads_shadow_calls", "shadow calls by route, model and status (ok, error, "
                                    "cancelled)", ["route", "model", "status"], registry=r)
        self.shadow_cost = Counter("crossroads_shadow_cost_usd", "cost in US$ of shadow calls", ["route", "model"],
                                   registry=r)
        self.shadow_latency = Histogram("crossroads_shadow_latency_seconds", "shadow call time, total", ["model"],
                                        buckets=LATENCY_BUCKETS_S, registry=r)
        self.shadow_skipped = Counter("crossroads_shadow_skipped", "shadow calls not made: the daily cap was reached "
                                      "(cap) or too many were in flight (busy)", ["route", "reason"], registry=r)
        self.embedding_waiting = Gauge("crossroads_embedding_waiting", "prompts waiting for their turn at the "
                                       "embedder (callers take turns in rotation)", registry=r)
        # route budgets (crossroads.serve.budgets): the pacing controller's state at the route's last decision
        self.budget = Gauge("crossroads_budget", "route budgets: the willingness to pay (lambda, quality per US$), "
                            "the period's spend, its target and the budget (US$)", ["route", "quantity"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
