"""RouterBench CSV files (withmartian/routerbench rows, as redistributed by RouterDC).

Columns: ``sample_id, prompt, eval_name``, then per model ``<model>`` (quality in
[0, 1]), ``<model>|model_response`` and ``<model>|total_cost`` (the real cost in US$),
and ``oracle_model_to_route_to``.  ``prompt`` and responses are stringified Python
lists of strings.  Empty cells are missing outcomes, never zeros.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.importers.common import parse_cost, parse_quality, read_csv, shown_columns
from crossroads.data.prompts import split_prompt
from crossroads.errors import DataFormatError

COST_SUFFIX = "|total_cost"
RESPONSE_SUFFIX = "|model_response"
INDEX_COLUMN = ""  # the unnamed pandas index RouterBench kept from its original table

#: The per-token prices (US$ per million tokens, in / out) behind RouterBench's
#: recorded ``total_cost``: API list prices, Together AI's for open models.  The
#: recorded costs divide out to these ratios; they are given to the pool so that
#: a router can price new requests.
ROUTERBENCH_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-3.5-turbo-1106": (1.0, 2.0),
    "claude-v1": (8.0, 24.0),
    "claude-v2": (8.0, 24.0),
    "claude-instant-v1": (0.8, 2.4),
    "meta/llama-2-70b-chat": (0.9, 0.9),
    "meta/code-llama-instruct-34b-chat": (0.776, 0.776),
    "zero-one-ai/Yi-34B-Chat": (0.8, 0.8),
    "mistralai/mixtral-8x7b-chat": (0.6, 0.6),
    "WizardLM/WizardLM-13B-V1.2": (0.3, 0.3),
    "mistralai/mistral-7b-chat": (0.2, 0.2),
}


def load_routerbench(path: Path) -> RoutingDataset:
    """A RouterBench CSV file, or every ``*.csv`` in a directory (all with the same models).

    Ids are ``routerbench/<sample_id>``; a sample_id that occurs on several rows gets
    ``@<original row index>`` appended.  Category is ``eval_name``.
    """
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(path, "a RouterBench CSV file or a directory of them", found="no *.csv file")
    models: list[str] | None = None
    rows: list[tuple[Path, int, dict[str, str]]] = []
    for file in files:
        header, file_rows = read_csv(file, ["sample_id", "prompt", "eval_name"])
        file_models = [name for name in header if f"{name}{COST_SUFFIX}" in header]
        if not file_models:
            raise DataFormatError(file, "per model a '<model>' and a '<model>|total_cost' column", row=0,
                                  found=shown_columns(header))
        if models is None:
            models = file_models
        elif sorted(file_models) != sorted(models):
            raise DataFormatError(file, f"the models of {files[0].name} ({', '.join(models)})", row=0, found=", ".join(file_models))
        rows.extend((file, number, row) for number, row in enumerate(file_rows, start=1))
    assert models is not None

    repeated = Counter(row["sample_id"] for _, _, row in rows)
    ids, prompts, full_prompts, categories, sources, responses = [], [], [], [], [], []
    quality = np.full((len(rows), len(models)), np.nan)
    cost = np.full((len(rows), len(models)), np.nan)
    for i, (file, number, row) in enumerate(rows):
        sample_id = row["sample_id"]
        if repeated[sample_id] > 1:
            sample_id += f"@{row.get(INDEX_COLUMN) or f'{file.stem}:{number}'}"
        ids.append(f"routerbench/{sample_id}")
        question, full = split_prompt(_prompt_text(row["prompt"], file, number))
        prompts.append(question)
        full_prompts.append(full)
        categories.append(row["eval_name"])
        sources.append(f"routerbench/{file.name}")
        for j, name in enumerate(models):
            quality[i, j] = parse_quality(row[name], file, number, name)
            cost[i, j] = parse_cost(row[f"{name}{COST_SUFFIX}"], file, number, f"{name}{COST_SUFFIX}")
        responses.append([_response_text(row.get(f"{name}{RESPONSE_SUFFIX}")) for name in models])
    if len(set(ids)) != len(ids):
        duplicate = next(name for name, count in Counter(ids).items() if count > 1)
        raise DataFormatError(path, "unique sample_id (or unique index) per row", found=f"{duplicate} twice")
    return RoutingDataset(
        query_ids=ids,
        prompts=prompts,
        categories=categories,
        sources=sources,
        models=[ModelInfo(name, *ROUTERBENCH_PRICES.get(name, (None, None)), "cost recorded by RouterBench") for name in models],
        quality=quality,
        cost_usd=cost,
        responses=responses,
        full_prompts=full_prompts if any(full is not None for full in full_prompts) else None,
        cost_estimated=[False] * len(models),
    )


def _prompt_text(cell: str, file: Path, number: int) -> str:
    """The prompt in a stringified list; a list repeating one prompt (a few arc rows) gives it once."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, str):
        return value
    if not (isinstance(value, list) and value and all(isinstance(part, str) for part in value)):
        raise DataFormatError(file, "'prompt' as a stringified Python list of strings, like ['...']", row=number, found=repr(cell[:60]))
    parts = list(dict.fromkeys(value))
    return "\n\n".join(parts)


def _response_text(cell: str | None) -> str | None:
    """A response cell (a stringified list of strings) as text; None when empty."""
    if not cell:
        return None
    if cell.startswith("["):
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return cell
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            return "\n\n".join(value)
    return cell
