"""Expected cost of sending a query to each model, learned from recorded costs.

A router decides before the call, so it needs the cost a model will probably charge
for *this* prompt.  Per model, recorded cost is fitted as ``a + b * input tokens``
(least squares on the queries where the cost is recorded, then clipped at zero):
``b`` picks up the input price, ``a`` the typical answer's price.  Input tokens are
estimated from the prompt as sent (the few-shot prompt where there is one) with
:func:`crossroads.data.pricing.estimate_tokens`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.data.pricing import ASSUMED_OUTPUT_TOKENS, estimate_tokens


def input_tokens(dataset: RoutingDataset) -> np.ndarray:
    """Estimated input tokens of each query, counting the full prompt where the data kept one."""
    full = dataset.full_prompts or [None] * dataset.n_queries
    return np.array([estimate_tokens(f or p) for f, p in zip(full, dataset.prompts)], dtype=np.float64)


class ExpectedCost:
    """Per-model linear model of cost in US$ against input tokens.

    >>> from crossroads.data.dataset import ModelInfo
    >>> data = RoutingDataset(["a", "b"], ["x" * 40, "x" * 400], ["c", "c"], ["s", "s"], [ModelInfo("m")],
    ...                       [[1], [1]], [[0.002], [0.011]])
    >>> ExpectedCost.fit(data).predict(np.array([10.0, 100.0, 1000.0])).round(4).ravel().tolist()
    [0.002, 0.011, 0.101]
    """

    def __init__(self, intercept_usd: np.ndarray, usd_per_token: np.ndarray):
        self.intercept_usd = np.asarray(intercept_usd, dtype=np.float64)
        self.usd_per_token = np.asarray(usd_per_token, dtype=np.float64)

    @classmethod
    def fit(cls, dataset: RoutingDataset, tokens: np.ndarray | None = None) -> ExpectedCost:
        tokens = input_tokens(dataset) if tokens is None else tokens
        intercept = np.zeros(dataset.n_models)
        slope = np.zeros(dataset.n_models)
        fallback = np.nanmean(dataset.cost_usd) if np.isfinite(dataset.cost_usd).any() else 0.0
        for j in range(dataset.n_models):
            rows = np.isfinite(dataset.cost_usd[:, j])
            if not rows.any():
                intercept[j] = fallback
                continue
            x, y = tokens[rows], dataset.cost_usd[rows, j]
            if rows.sum() >= 2 and np.ptp(x) > 0:
                slope[j], intercept[j] = np.polyfit(x, y, 1)
                slope[j] = max(slope[j], 0.0)
                intercept[j] = max(float(np.mean(y - slope[j] * x)), 0.0)
            else:
                intercept[j] = float(y.mean())
        return cls(intercept, slope)

    @classmethod
    def from_prices(cls, descriptors: Sequence, output_tokens: int = ASSUMED_OUTPUT_TOKENS) -> ExpectedCost:
        """Cost from list prices, for models without recorded costs: input tokens plus ``output_tokens`` of answer.

        ``descriptors`` are :class:`crossroads.data.descriptors.ModelDescriptor`; one without a
        price is charged its tier's typical price.
        """
        from crossroads.data.descriptors import TIER_PRICE_USD

        price_in, price_out = [], []
        for d in descriptors:
            fallback = TIER_PRICE_USD[d.resolved_tier]
            price_in.append(fallback if d.price_per_mtok_in is None else d.price_per_mtok_in)
            price_out.append(fallback if d.price_per_mtok_out is None else d.price_per_mtok_out)
        return cls(np.array(price_out) * output_tokens / 1e6, np.array(price_in) / 1e6)

    def predict(self, tokens: Sequence[float] | np.ndarray) -> np.ndarray:
        """Expected cost, shape ``(len(tokens), n_models)``."""
        tokens = np.asarray(tokens, dtype=np.float64).reshape(-1, 1)
        return self.intercept_usd + tokens * self.usd_per_token
