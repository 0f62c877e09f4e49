"""A server's log with a known truth: requests on a few categories, routed by an exploring policy.

Every request's outcome on every model is drawn, so what always sending the traffic to
one model would have cost and scored is known exactly; the store gets only what the
policy chose, with its propensity, as a server would have written it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODELS = ("small", "medium", "large")
CATEGORIES = ("chat", "code", "math", "facts")
#: Mean quality per (category, model) and mean answer length in tokens.
QUALITY = np.array([[0.3, 0.6, 0.9], [0.5, 0.5, 0.8], [0.2, 0.7, 0.6], [0.6, 0.4, 0.9]])
ANSWER_TOKENS = np.array([[100, 200, 400], [50, 80, 120], [300, 300, 600], [20, 40, 80]], dtype=float)
#: US$ per million tokens in and out.
PRICES = {"small": (0.1, 0.2), "medium": (1.0, 2.0), "large": (10.0, 30.0)}
#: A prompt template per category.
PROMPTS = {"chat": "Tell me something cheerful about weekend number {} and day {}.",
           "code": "Write a Python function that returns the {}th power of {}.",
           "math": "What is {} plus {}? Give the sum.",
           "facts": "Which river flows through the capital of country number {} in region {}?"}
#: The policy's favourite model per category.
FAVOURITE = np.array([1, 0, 1, 2])
DAY_S = 86400.0


@dataclass
class LoggedTraffic:
    category: np.ndarray
    chosen: np.ndarray
    propensity: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray  # (n, models)
    quality: np.ndarray  # (n, models)
    created_s: np.ndarray

    @property
    def cost_usd(self) -> np.ndarray:
        price_in = np.array([PRICES[m][0] for m in MODELS])
        price_out = np.array([PRICES[m][1] for m in MODELS])
        return (self.tokens_in[:, None] * price_in + self.tokens_out * price_out) / 1e6

    def served(self, values: np.ndarray) -> np.ndarray:
        return values[np.arange(len(self.chosen)), self.chosen]


def draw(n: int, seed: int = 0, explore: float = 0.3, start_s: float = 1_780_000_000.0, days: float = 3.0):
    """``n`` requests over ``days`` days: the favourite with probability ``1 - explore``, else uniform."""
    rng = np.random.default_rng(seed)
    k = len(MODELS)
    category = rng.integers(len(CATEGORIES), size=n)
    probabilities = np.full((n, k), explore / k)
    probabilities[np.arange(n), FAVOURITE[category]] += 1.0 - explore
    chosen = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    return LoggedTraffic(
        category=category, chosen=chosen, propensity=probabilities[np.arange(n), chosen],
        tokens_in=rng.integers(50, 500, size=n).astype(float),
        tokens_out=rng.poisson(ANSWER_TOKENS[category]).astype(float),
        quality=(rng.random((n, k)) < QUALITY[category]).astype(float),
        created_s=start_s + np.sort(rng.random(n)) * days * DAY_S)


def prompts(traffic: LoggedTraffic) -> list[str]:
    """A prompt per request, in the words of its category (what a route with ``store_prompts: true`` keeps)."""
    return [PROMPTS[CATEGORIES[c]].format(i, i % 17 + 2) for i, c in enumerate(traffic.category)]


def fill(store, traffic: LoggedTraffic, route: str = "auto", labelled: float = 1.0, seed: int = 0,
         with_prompts: bool = False) -> None:
    """Write ``traffic`` into ``store`` as the server would; a random ``labelled`` share gets quality feedback;
    ``with_prompts`` stores each request's prompt (:func:`prompts`)."""
    rng = np.random.default_rng(seed)
    store.record_pool(PRICES)
    cost = traffic.served(traffic.cost_usd)
    texts = prompts(traffic) if with_prompts else [None] * len(traffic.chosen)
    for i in range(len(traffic.chosen)):
        model = MODELS[traffic.chosen[i]]
        store.record_decision(f"{route}-{i}", route=route, model=model, learner_key=None, candidates=list(MODELS),
                              probability=float(traffic.propensity[i]), scores=None, context=None,
                              created_s=float(traffic.created_s[i]), category=CATEGORIES[traffic.category[i]],
                              prompt=texts[i])
        store.record_outcome(f"{route}-{i}", model=model, status="ok", cost_usd=float(cost[i]),
                             latency_s=0.1 + 0.01 * (i % 10), ttft_s=None, tokens_in=int(traffic.tokens_in[i]),
                             tokens_out=int(traffic.tokens_out[i, traffic.chosen[i]]), fallbacks=0)
    store.flush()
    for i in np.flatnonzero(rng.random(len(traffic.chosen)) < labelled):
        store.add_feedback(f"{route}-{i}", reward=None, quality=float(traffic.quality[i, traffic.chosen[i]]),
                           payload=None, created_s=float(traffic.created_s[i]) + 1.0)
