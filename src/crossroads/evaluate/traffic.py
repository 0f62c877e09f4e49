"""A server's logged traffic as columns of numbers: what reports and off-policy estimates read.

:func:`load_traffic` reads :meth:`crossroads.store.Store.traffic` chunk by chunk into numpy
arrays (strings become integer codes), so a million decisions take about 100 MB and no
Python object per row survives the chunk it came in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.store.records import TRAFFIC_COLUMNS

#: An outcome's status codes: answered, every model failed, the stream broke after its first chunk, the client
#: left before the end of the stream.
STATUSES = ("ok", "failed", "broken", "disconnected")
#: The category of a decision whose request named none.
NO_CATEGORY = "(none)"

_FLOATS = ("propensity", "created_s", "cost_usd", "latency_s", "tokens_in", "tokens_out", "fallbacks", "quality",
           "reward")
_CODES = ("route", "chosen", "model", "category", "status")


@dataclass
class Traffic:
    """One entry per logged decision; ``*_names`` decode the integer columns (-1: none).

    ``chosen`` is the model the route picked and ``propensity`` the probability it gave
    that pick; ``model`` answered (another one after a fallback, -1 if none did).
    ``quality`` and ``reward`` are users' feedback (NaN where none came).
    """

    route: np.ndarray
    chosen: np.ndarray
    model: np.ndarray
    category: np.ndarray
    status: np.ndarray
    propensity: np.ndarray
    created_s: np.ndarray
    cost_usd: np.ndarray
    latency_s: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    fallbacks: np.ndarray
    quality: np.ndarray
    reward: np.ndarray
    route_names: list[str]
    model_names: list[str]
    category_names: list[str]

    def __len__(self) -> int:
        return len(self.route)

    @property
    def answered(self) -> np.ndarray:
        """Decisions a model answered in full, with token counts: the ones that can be priced."""
        return (self.status == STATUSES.index("ok")) & np.isfinite(self.tokens_in) & np.isfinite(self.tokens_out)

    def model_index(self, name: str) -> int:
        try:
            return self.model_names.index(name)
        except ValueError:
            raise CrossroadsError(f"model {name!r} never appears in the traffic or the pool; known: "
                                  f"{', '.join(self.model_names)}") from None


def load_traffic(chunks: Iterable[list[tuple]], pool: Iterable[str] = ()) -> Traffic:
    """The traffic in ``chunks`` (tuples of ``TRAFFIC_COLUMNS``); every model of ``pool`` gets a code."""
    codes: dict[str, dict[str, int]] = {name: {} for name in _CODES}
    codes["status"] = {status: k for k, status in enumerate(STATUSES)}
    models = codes["model"]
    for name in pool:
        models.setdefault(name, len(models))
    codes["chosen"] = models  # one numbering for the pick and the answer
    parts: dict[str, list[np.ndarray]] = {name: [] for name in TRAFFIC_COLUMNS}
    for rows in chunks:
        columns = dict(zip(TRAFFIC_COLUMNS, zip(*rows)))
        for name in _FLOATS:
            parts[name].append(np.array(columns[name], dtype=np.float64))
        for name in _CODES:
            index = codes[name]
            values = columns[name]
            if name == "category":
                values = (NO_CATEGORY if value is None else value for value in values)
            parts[name].append(np.fromiter(
                (-1 if value is None else index.setdefault(value, len(index)) for value in values),
                dtype=np.int32))
    arrays = {name: np.concatenate(part) if part else np.empty(0, dtype=np.int32 if name in _CODES else np.float64)
              for name, part in parts.items()}
    return Traffic(**arrays, route_names=list(codes["route"]), model_names=list(models),
                   category_names=list(codes["category"]))
