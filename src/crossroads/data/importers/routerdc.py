"""RouterDC's task files (shuhao02/RouterDC, e.g. ``datasets/split2_model7/``).

Each ``<task>_train.json`` (or ``<task>-train.json``) is a JSON list of
``{question, scores, cluster_id?}`` with ``scores`` mapping seven open 7-8B models
to quality in [0, 1].  No prices and no answers: costs are estimated from the
size-based price of a 7-8B open model, the question's tokens and an assumed
answer length.
"""

from __future__ import annotations

import re
from pathlib import Path

from crossroads.data.dataset import RoutingDataset
from crossroads.data.importers.common import (
    price_overrides,
    scored_dataset,
    scored_questions,
)
from crossroads.data.pricing import price_for, size_based_price
from crossroads.errors import DataFormatError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS

_TASK_FILE = re.compile(r"^(?P<task>.+?)[_-](?:train|test|val|valid)$")


def load_routerdc(
    path: Path, *, prices: str | Path | None = None, output_tokens: float = ASSUMED_OUTPUT_TOKENS
) -> RoutingDataset:
    """A RouterDC JSON file, or every ``*_train.json``/``*-train.json`` in a directory.

    Category is the task named by the file; ids are ``routerdc/<task>/<row>`` (rows from 0).
    """
    if path.is_dir():
        files = sorted(file for file in path.glob("*.json") if re.search(r"[_-]train$", file.stem))
        if not files:
            raise DataFormatError(path, "RouterDC files named <task>_train.json or <task>-train.json", found="none")
    else:
        files = [path]
    overrides = price_overrides(prices)
    ids, questions, categories, sources, scores = [], [], [], [], []
    for file in files:
        match = _TASK_FILE.match(file.stem)
        task = match.group("task") if match else file.stem
        for row, question, row_scores, _ in scored_questions(file):
            ids.append(f"routerdc/{task}/{row - 1}")
            questions.append(question)
            categories.append(task)
            sources.append(f"routerdc/{file.name}")
            scores.append(row_scores)
    names = dict.fromkeys(name for row in scores for name in row)
    # RouterDC's pool is 7-8B open models: one not in the price table gets the 7B tier.
    table = {name: price_for(name, overrides) or size_based_price(7) for name in names}
    return scored_dataset(ids, questions, categories, sources, scores, table, output_tokens)
