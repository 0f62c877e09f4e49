"""A per-model latency model for recorded outcomes that carry no latency.

Most published routing datasets record quality and cost but not how long each answer
took.  To score an objective that weighs latency, the simulator estimates it as::

    latency_s = ttft_s + output_tokens / tokens_per_s

with a :class:`LatencyProfile` per model (time to first token, decoding speed).
``output_tokens`` is estimated from the model's recorded answer when the dataset keeps
answers (:func:`crossroads.objective.cost.estimate_tokens`), else
:data:`crossroads.objective.cost.ASSUMED_OUTPUT_TOKENS`.  A recorded latency always wins over the estimate.

Default profiles by price tier (the model's output price in US$ per million tokens,
from the dataset, else :func:`crossroads.data.pricing.price_for`); the price stands in
for model size, since larger models cost more and decode more slowly:

====================  ===================  ========  ============
tier                  output US$/Mtok      ttft_s    tokens_per_s
====================  ===================  ========  ============
small (<= ~8B)        <= 0.30              0.25      120
medium (13-70B, MoE)  <= 1.00              0.40      70
large                 <= 8.00              0.60      45
frontier (GPT-4)      > 8.00               0.90      25
unknown price         --                   0.40      70
====================  ===================  ========  ============

These are round, order-of-magnitude figures for hosted serving in 2024 (public
throughput dashboards put small open models at about 100-150 tokens/s and GPT-4-class
models at about 20-40), not measurements: pass your own profiles for any claim that
depends on latency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.pricing import price_for
from crossroads.errors import CrossroadsError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, estimate_tokens


@dataclass(frozen=True)
class LatencyProfile:
    """How fast a model answers: time to first token (s) and decoding speed (tokens/s).

    >>> LatencyProfile(ttft_s=0.5, tokens_per_s=50).latency_s(100)
    2.5
    """

    ttft_s: float
    tokens_per_s: float

    def __post_init__(self) -> None:
        if not (isinstance(self.ttft_s, (int, float)) and math.isfinite(self.ttft_s) and self.ttft_s >= 0):
            raise CrossroadsError(f"ttft_s must be a finite number >= 0, got {self.ttft_s!r}")
        if not (isinstance(self.tokens_per_s, (int, float)) and math.isfinite(self.tokens_per_s) and self.tokens_per_s > 0):
            raise CrossroadsError(f"tokens_per_s must be a finite number > 0, got {self.tokens_per_s!r}")

    def latency_s(self, output_tokens: float | np.ndarray) -> float | np.ndarray:
        """Estimated seconds to produce ``output_tokens`` tokens."""
        latency = self.ttft_s + np.asarray(output_tokens, dtype=np.float64) / self.tokens_per_s
        return float(latency) if latency.ndim == 0 else latency


#: (upper bound of the output price in US$ per million tokens, profile), cheapest first.
PRICE_TIERS: tuple[tuple[float, LatencyProfile], ...] = (
    (0.30, LatencyProfile(0.25, 120.0)),
    (1.00, LatencyProfile(0.40, 70.0)),
    (8.00, LatencyProfile(0.60, 45.0)),
    (math.inf, LatencyProfile(0.90, 25.0)),
)
#: Profile of a model whose price is unknown.
UNKNOWN_PRICE_PROFILE = LatencyProfile(0.40, 70.0)


def default_profile(model: ModelInfo | str) -> LatencyProfile:
    """The price-tier profile of ``model`` (see the module's table).

    >>> default_profile(ModelInfo("big", 10.0, 30.0))
    LatencyProfile(ttft_s=0.9, tokens_per_s=25.0)
    >>> default_profile("Llama-2-7b-hf")  # size tier price: $0.20
    LatencyProfile(ttft_s=0.25, tokens_per_s=120.0)
    """
    info = ModelInfo(model) if isinstance(model, str) else model
    price_out = info.price_per_mtok_out
    if price_out is None:
        price = price_for(info.name)
        price_out = None if price is None else price.price_per_mtok_out
    if price_out is None:
        return UNKNOWN_PRICE_PROFILE
    for limit, profile in PRICE_TIERS:
        if price_out <= limit:
            return profile
    return PRICE_TIERS[-1][1]


def latency_matrix(
    dataset: RoutingDataset,
    profiles: Mapping[str, LatencyProfile] | None = None,
    output_tokens: int = ASSUMED_OUTPUT_TOKENS,
) -> np.ndarray:
    """``(n_queries, n_models)`` latency in seconds: recorded where present, else estimated.

    ``profiles`` maps model names to their profile (a model left out gets
    :func:`default_profile`); ``output_tokens`` is used where no answer text is kept.

    >>> from crossroads.data.dataset import RoutingDataset
    >>> data = RoutingDataset(["q"], ["hi"], ["c"], ["s"], [ModelInfo("m")], [[1.0]], [[0.0]])
    >>> latency_matrix(data, {"m": LatencyProfile(0.5, 100.0)}, output_tokens=50)
    array([[1.]])
    """
    profiles = dict(profiles or {})
    unknown = [name for name in profiles if name not in dataset.model_names]
    if unknown:
        raise CrossroadsError(f"latency profiles for models not in the pool: {', '.join(unknown)}")
    if isinstance(output_tokens, bool) or not isinstance(output_tokens, (int, float)) or not output_tokens >= 0:
        raise CrossroadsError(f"output_tokens must be a number >= 0, got {output_tokens!r}")
    n, m = dataset.n_queries, dataset.n_models
    tokens = np.full((n, m), float(output_tokens))
    if dataset.responses is not None:
        for i, row in enumerate(dataset.responses):
            for j, text in enumerate(row):
                if text is not None:
                    tokens[i, j] = estimate_tokens(text)
    estimated = np.empty((n, m))
    for j, model in enumerate(dataset.models):
        profile = profiles.get(model.name) or default_profile(model)
        estimated[:, j] = profile.ttft_s + tokens[:, j] / profile.tokens_per_s
    if dataset.latency_s is None:
        return estimated
    recorded = np.asarray(dataset.latency_s, dtype=np.float64)
    return np.where(np.isnan(recorded), estimated, recorded)
