"""LLMRouter's router training file (ulab-uiuc/LLMRouter, e.g. ``dcrouter_train.json``).

A JSON list of ``{question, scores, cluster_id}``: ``scores`` maps each of the
pool's models to its quality in [0, 1] (a dict, or that dict stringified).
Prices come from LLMRouter's ``default_llm.json`` beside the file (``input_price``,
``output_price`` in US$ per million tokens) or a ``prices=`` file.  No answers are
recorded, so costs are estimated from the question's tokens and an assumed answer
length.
"""

from __future__ import annotations

from pathlib import Path

from crossroads.data.dataset import RoutingDataset
from crossroads.data.importers.common import (
    existing,
    price_overrides,
    scored_dataset,
    scored_questions,
)
from crossroads.errors import DataFormatError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS

PRICE_FILE = "default_llm.json"
DEFAULT_FILE = "dcrouter_train.json"


def load_llmrouter(
    path: Path, *, prices: str | Path | None = None, output_tokens: float = ASSUMED_OUTPUT_TOKENS
) -> RoutingDataset:
    """An LLMRouter JSON file (or a directory holding ``dcrouter_train.json``).

    Category is ``cluster-<cluster_id>`` (the file names no task); ids are
    ``llmrouter/<file stem>/<row>`` with rows from 0.  Models without a price get
    NaN costs.
    """
    file = path / DEFAULT_FILE if path.is_dir() else path
    existing(file, f"LLMRouter's {DEFAULT_FILE} (or another of its JSON training files)")
    if prices is None and (file.parent / PRICE_FILE).exists():
        prices = file.parent / PRICE_FILE
    if prices is not None and Path(prices).resolve() == file.resolve():
        raise DataFormatError(file, "a training file, not the price table")
    table = price_overrides(prices)
    rows = scored_questions(file)
    names = dict.fromkeys(name for _, _, scores, _ in rows for name in scores)
    return scored_dataset(
        ids=[f"llmrouter/{file.stem}/{row - 1}" for row, _, _, _ in rows],
        questions=[question for _, question, _, _ in rows],
        categories=[f"cluster-{record['cluster_id']}" if "cluster_id" in record else "llmrouter" for _, _, _, record in rows],
        sources=[f"llmrouter/{file.name}"] * len(rows),
        scores=[scores for _, _, scores, _ in rows],
        prices={name: table.get(name) for name in names},
        output_tokens=output_tokens,
    )
