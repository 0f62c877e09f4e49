"""A recorded upstream: each model of a dataset answers a prompt as it did when the dataset was recorded.

Given to :class:`crossroads.upstream.fake.FakeUpstream` (``recording=``), it makes a
production twin: ``crossroads serve`` in front of it routes real requests, and every
counterfactual (what another model would have answered, cost and scored) is known.

* **Which query.** A request is matched by the exact text of its last user message.
  Queries whose prompt repeats an earlier one are dropped (the first is kept), so the
  twin and a replay client (:mod:`crossroads.evaluate.replay`) agree on the row a prompt
  means; ``Recording.dataset`` is the dataset without them.
* **Prices.** The dataset's list prices where both are known; otherwise one price for
  input and output tokens that keeps the model's mean recorded cost:
  ``mean cost per query / (mean input tokens + ASSUMED_OUTPUT_TOKENS) * 1e6``.
* **Usage.** ``prompt_tokens`` is the prompt's estimated token count (the full prompt's,
  few-shot examples included, where the dataset has one); ``completion_tokens`` the whole
  number that brings the call's price closest to the recorded cost (a recorded cost below
  the prompt's price lowers the prompt count instead).  What those counts cost at these
  prices is the truth a replay compares with (:meth:`Recording.cost_matrix`); it differs
  from the recorded cost by at most half an output token's price.  At a zero output
  price the answer counts its recorded text's tokens (else ``ASSUMED_OUTPUT_TOKENS``) and
  the prompt count alone carries the cost; where no cost is recorded, the same count.
* **Latency.** The recorded latency, else ``0.3 s + completion tokens / 50 per s``,
  times ``latency_scale`` (0: answer at once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, Price, estimate_tokens, prompt_tokens

#: Estimated latency where none is recorded: a fixed start plus the answer at this many tokens a second.
START_S, TOKENS_PER_S = 0.3, 50.0


class NoRecording(CrossroadsError):
    """The recording holds no answer for this request (an HTTP 404 from the twin)."""


@dataclass(frozen=True)
class RecordedAnswer:
    """A model's recorded answer to one query: text, usage, (scaled) latency, and cost at the twin's prices."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    cost_usd: float
    row: int


class Recording:
    """Every (model, prompt) outcome of ``dataset``, ready to answer as that model did."""

    def __init__(self, dataset: RoutingDataset, latency_scale: float = 0.0):
        if not math.isfinite(latency_scale) or latency_scale < 0:
            raise CrossroadsError(f"latency_scale must be a number >= 0, got {latency_scale!r}")
        first: dict[str, int] = {}
        for i, prompt in enumerate(dataset.prompts):
            first.setdefault(prompt, i)
        self.dataset = dataset.subset(np.array(sorted(first.values()), dtype=int))
        self.latency_scale = float(latency_scale)
        self._rows = {prompt: i for i, prompt in enumerate(self.dataset.prompts)}
        self._models = {name: j for j, name in enumerate(self.dataset.model_names)}
        self.tokens_in = prompt_tokens(self.dataset.prompts, self.dataset.full_prompts)
        self.prices = self._prices()
        self._tokens_in, self._tokens_out = self._token_counts()
        self._cost = self._costs()

    @classmethod
    def load(cls, specs: Sequence[str], latency_scale: float = 0.0) -> Recording:
        """The recording of the datasets at ``specs`` (``FORMAT:PATH``)."""
        from crossroads.data.importers import load_datasets

        return cls(load_datasets(list(specs)), latency_scale)

    # -- answering -----------------------------------------------------------------------
    def answer(self, model: str, prompt: str) -> RecordedAnswer:
        """What ``model`` answered to ``prompt``; :class:`NoRecording` if the recording cannot say."""
        j = self._model(model)
        row = self._rows.get(prompt)
        if row is None:
            start = prompt[:60] + ("..." if len(prompt) > 60 else "")
            raise NoRecording(f"the recorded upstream answers only the {len(self._rows):,} prompts of its dataset; "
                              f"it holds none starting {start!r}")
        if not math.isfinite(self.dataset.quality[row, j]):
            raise NoRecording(f"model {model!r} has no recorded outcome for query {self.dataset.query_ids[row]!r} "
                              "(its quality is missing from the dataset); send this prompt to another model")
        tokens_in, tokens_out = int(self._tokens_in[row, j]), int(self._tokens_out[row, j])
        return RecordedAnswer(self._text(row, j), tokens_in, tokens_out, self._latency(row, j, tokens_out),
                              self.cost(row, model), row)

    def cost(self, row: int, model: str) -> float:
        """What the twin's token counts for ``model`` on ``row`` cost at :attr:`prices` (NaN: no recorded outcome)."""
        return float(self._cost[row, self._model(model)])

    def quality(self, row: int, model: str) -> float:
        """The recorded quality of ``model`` on ``row`` (NaN: no recorded outcome)."""
        return float(self.dataset.quality[row, self._model(model)])

    def cost_matrix(self) -> np.ndarray:
        """``(queries, models)``: what every answer costs at the twin's token counts and prices (NaN: no answer)."""
        return self._cost.copy()

    def serve_config(self, base_url: str) -> dict:
        """A ``crossroads serve`` config (as YAML would hold it) whose models are this recording at ``base_url``."""
        models = [{"name": name, "base_url": base_url, "price_per_mtok_in": self.prices[name].price_per_mtok_in,
                   "price_per_mtok_out": self.prices[name].price_per_mtok_out, "max_retries": 0}
                  for name in self.dataset.model_names]
        return {"models": models, "routes": {"bandit": {"learner": "thompson"}}, "default_route": "bandit"}

    # -- internals -------------------------------------------------------------------------
    def _model(self, model: str) -> int:
        if model not in self._models:
            raise NoRecording(f"The model `{model}` does not exist here: the recording holds "
                              f"{', '.join(self._models)}")
        return self._models[model]

    def _prices(self) -> dict[str, Price]:
        prices = {}
        for j, model in enumerate(self.dataset.models):
            known = [model.price_per_mtok_in, model.price_per_mtok_out]
            if all(p is not None and math.isfinite(p) for p in known):
                prices[model.name] = Price(float(known[0]), float(known[1]), "dataset")
                continue
            cost = self.dataset.cost_usd[:, j]
            recorded = np.isfinite(cost)
            per_token = (float(cost[recorded].mean() / (self.tokens_in[recorded].mean() + ASSUMED_OUTPUT_TOKENS))
                         if recorded.any() else 0.0)
            prices[model.name] = Price(per_token * 1e6, per_token * 1e6,
                                       "mean recorded cost" if recorded.any() else "no recorded cost")
        return prices

    def _token_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Input and output tokens per (query, model) reproducing the recorded costs."""
        n, m = self.dataset.quality.shape
        tokens_in = np.repeat(self.tokens_in[:, None], m, axis=1)
        tokens_out = np.full((n, m), float(ASSUMED_OUTPUT_TOKENS))  # the answer's length where no cost says it
        if self.dataset.responses is not None:
            tokens_out = np.array([[estimate_tokens(text) or ASSUMED_OUTPUT_TOKENS for text in row]
                                   for row in self.dataset.responses], dtype=np.float64).reshape(n, m)
        for j, name in enumerate(self.dataset.model_names):
            price_in, price_out = self.prices[name].price_per_mtok_in / 1e6, self.prices[name].price_per_mtok_out / 1e6
            cost = self.dataset.cost_usd[:, j]
            known = np.isfinite(cost) & (cost >= 0)
            if price_in > 0:  # the prompt alone dearer than the call: as many prompt tokens as the cost pays for
                fit = np.floor(np.where(known, cost, 0.0) / price_in + 1e-9)
                tokens_in[:, j] = np.where(known & (tokens_in[:, j] > fit), fit, tokens_in[:, j])
            if price_out > 0:
                rest = cost[known] - tokens_in[known, j] * price_in
                tokens_out[known, j] = np.maximum(np.round(rest / price_out), 0)
            elif price_in > 0:
                tokens_in[known, j] = np.round(cost[known] / price_in)
        return tokens_in, tokens_out

    def _costs(self) -> np.ndarray:
        price_in = np.array([self.prices[m].price_per_mtok_in for m in self.dataset.model_names])
        price_out = np.array([self.prices[m].price_per_mtok_out for m in self.dataset.model_names])
        cost = (self._tokens_in * price_in + self._tokens_out * price_out) / 1e6
        return np.where(np.isfinite(self.dataset.quality), cost, np.nan)

    def _text(self, row: int, j: int) -> str:
        responses = self.dataset.responses
        text = responses[row][j] if responses is not None else None
        if text:
            return text
        return f"[recorded answer of {self.dataset.model_names[j]}: quality {self.dataset.quality[row, j]:.3f}]"

    def _latency(self, row: int, j: int, tokens_out: int) -> float:
        if not self.latency_scale:
            return 0.0
        latency = self.dataset.latency_s
        recorded = None if latency is None else latency[row, j]
        if recorded is None or not math.isfinite(recorded):
            recorded = START_S + tokens_out / TOKENS_PER_S
        return float(recorded) * self.latency_scale


def last_user_text(body: dict) -> str | None:
    """The text of a chat request's last user message (string content, or its text parts joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content
                               if isinstance(part, dict) and isinstance(part.get("text"), str))
    return None
