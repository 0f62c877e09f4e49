"""Reading helpers shared by the importers: every failure becomes a DataFormatError naming file and row."""

from __future__ import annotations

import ast
import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.pricing import read_price_file
from crossroads.data.prompts import split_prompt
from crossroads.errors import DataFormatError
from crossroads.objective.cost import Price, cost_usd, estimate_tokens_many

T = TypeVar("T")

# Model responses in RouterBench exceed csv's default 128 kB field limit.
csv.field_size_limit(2**31 - 1)


def read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file; ``required`` columns must be present.

    Row numbers in errors count data rows from 1 (the header is row 0).
    """
    rows: list[dict[str, str]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            missing = [name for name in required if name not in header]
            if missing and header and header[0].lstrip().startswith(("{", "[")):
                raise DataFormatError(path, "a CSV file", row=0, found="JSON, not CSV: for a crossroads JSONL file "
                                      "write crossroads:PATH")
            if missing:
                raise DataFormatError(
                    path,
                    "columns " + ", ".join(repr(name) for name in required),
                    row=0,
                    found=f"no {', '.join(repr(name) for name in missing)} among its columns ({shown_columns(header)})",
                )
            for row in reader:
                if None in row:  # more cells than header columns
                    raise DataFormatError(path, f"{len(header)} cells as in the header", row=len(rows) + 1, found="more")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "UTF-8 encoded CSV", found=str(exc)) from None
    except csv.Error as exc:
        raise DataFormatError(path, "well-formed CSV", row=len(rows) + 1, found=str(exc)) from None
    return header, rows


def shown_columns(header: Sequence[str], most: int = 8) -> str:
    """A CSV header for an error message: the first columns, each cut short (a file read as the wrong
    format can have a whole JSON line as its "header")."""
    cells = [cell if len(cell) <= 40 else cell[:37] + "..." for cell in header[:most]]
    more = f", ... ({len(header)} columns)" if len(header) > most else ""
    return (", ".join(cells) or "none") + more


def read_json(path: Path) -> object:
    """The JSON document in ``path``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "UTF-8 encoded JSON", found=str(exc)) from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, "valid JSON", row=f"{exc.lineno}, column {exc.colno}", found=exc.msg) from None


def read_json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """``(line_number, value)`` for each non-empty line of a JSON Lines file."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(path, "one JSON value per line", row=number, found=exc.msg) from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "UTF-8 encoded JSON Lines", found=str(exc)) from None


def json_list(path: Path, document: object, what: str) -> list:
    """``document`` if it is a list, else a DataFormatError saying a list of ``what`` was expected."""
    if not isinstance(document, list):
        raise DataFormatError(path, f"a JSON list of {what}", found=f"a JSON {type(document).__name__}")
    return document


def require_keys(path: Path, record: object, keys: Sequence[str], row: object) -> dict:
    """``record`` if it is an object holding ``keys``."""
    if not isinstance(record, dict):
        raise DataFormatError(path, f"an object with {', '.join(keys)}", row=row, found=type(record).__name__)
    missing = [key for key in keys if key not in record]
    if missing:
        raise DataFormatError(path, f"fields {', '.join(keys)}", row=row, found=f"no {', '.join(missing)}")
    return record


def parse_quality(value: object, path: Path, row: object, column: str) -> float:
    """A quality cell as a float in [0, 1]; an empty cell or null is missing (NaN)."""
    if value is None or value == "":
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text in ("True", "False"):
            return 1.0 if text == "True" else 0.0
        try:
            number = float(text)
        except ValueError:
            raise DataFormatError(path, f"{column!r} to be a number in [0, 1]", row=row, found=repr(value)) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise DataFormatError(path, f"{column!r} to be a number in [0, 1]", row=row, found=repr(value))
    if math.isnan(number):
        return number
    if not 0.0 <= number <= 1.0:
        raise DataFormatError(path, f"{column!r} to be a number in [0, 1]", row=row, found=repr(value))
    return number


def parse_cost(value: object, path: Path, row: object, column: str) -> float:
    """A cost cell in US$ as a non-negative float; an empty cell is missing (NaN)."""
    if value is None or value == "":
        return math.nan
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataFormatError(path, f"{column!r} to be a cost in US$", row=row, found=repr(value)) from None
    if not (number >= 0 or math.isnan(number)) or math.isinf(number):
        raise DataFormatError(path, f"{column!r} to be a non-negative cost in US$", row=row, found=repr(value))
    return number


def read_contaminated(path: Path) -> set[str]:
    """The ``eval_prompt`` values of a RouteLLM ``contaminated_prompts.jsonl`` (queries to drop)."""
    prompts = set()
    for number, record in read_json_lines(path):
        record = require_keys(path, record, ["eval_prompt"], number)
        prompts.add(record["eval_prompt"])
    return prompts


def existing(path: Path, expected: str) -> Path:
    """``path`` if it exists, else a DataFormatError saying what should be there."""
    if not path.exists():
        raise DataFormatError(path, expected, found="no such file or directory")
    return path


def with_progress(items: Sequence[T], description: str, enabled: bool) -> Iterable[T]:
    """``items``, behind a rich progress bar on stderr when ``enabled``."""
    if not enabled:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, console=Console(stderr=True), transient=True)


def price_overrides(prices: str | Path | None) -> dict[str, Price]:
    """Prices from the ``prices=`` option of an importer (a JSON price file), or none."""
    return {} if prices is None else read_price_file(prices)


def estimated_cost_usd(tokens_in: np.ndarray, tokens_out: np.ndarray, quality: np.ndarray, prices: list[Price | None]) -> np.ndarray:
    """``(n_queries, n_models)`` cost estimates; NaN where the outcome is missing or the price unknown.

    ``tokens_in`` is per query (or per cell), ``tokens_out`` per cell.
    """
    tokens_in = np.broadcast_to(np.asarray(tokens_in, dtype=np.float64).reshape(len(quality), -1), quality.shape)
    cost = np.full(quality.shape, np.nan)
    for j, price in enumerate(prices):
        cost[:, j] = cost_usd(tokens_in[:, j], tokens_out[:, j], price)
    cost[np.isnan(quality)] = np.nan
    return cost


def model_info(name: str, price: Price | None, description: str = "") -> ModelInfo:
    """A pool member with its price (None when unknown) and where the price comes from."""
    if price is None:
        return ModelInfo(name, None, None, description)
    return ModelInfo(name, price.price_per_mtok_in, price.price_per_mtok_out, "; ".join(filter(None, [description, price.basis])))


def parse_scores(value: object, path: Path, row: object) -> dict[str, float]:
    """A ``scores`` field: a dict of model name to quality, or that dict stringified (JSON or Python)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataFormatError(path, "'scores' as a dict of model name to quality", row=row, found=repr(value[:60])) from None
    if not isinstance(value, dict) or not value:
        raise DataFormatError(path, "'scores' as a dict of model name to quality", row=row, found=repr(value)[:60])
    return {str(name): parse_quality(score, path, row, f"scores[{name!r}]") for name, score in value.items()}


def scored_questions(path: Path) -> list[tuple[int, str, dict[str, float], dict]]:
    """``(row, question, scores, record)`` of a JSON list of ``{question, scores, ...}`` (LLMRouter, RouterDC)."""
    records = json_list(path, read_json(path), "{question, scores} records")
    out = []
    for row, record in enumerate(records, start=1):
        record = require_keys(path, record, ["question", "scores"], row)
        if not isinstance(record["question"], str):
            raise DataFormatError(path, "'question' as a string", row=row, found=repr(record["question"])[:60])
        out.append((row, record["question"], parse_scores(record["scores"], path, row), record))
    return out


def scored_dataset(
    ids: list[str],
    questions: list[str],
    categories: list[str],
    sources: list[str],
    scores: list[dict[str, float]],
    prices: dict[str, Price | None],
    output_tokens: float,
) -> RoutingDataset:
    """A dataset from per-question score dicts; costs estimated from question length and ``output_tokens``.

    The pool is every model named in any score dict (first-seen order); a model absent
    from a question's dict has a missing outcome there.
    """
    names = list(dict.fromkeys(name for row in scores for name in row))
    quality = np.array([[row.get(name, np.nan) for name in names] for row in scores], dtype=np.float64).reshape(len(ids), len(names))
    tokens_in = estimate_tokens_many(questions)
    tokens_out = np.full(quality.shape, float(output_tokens))
    model_prices = [prices.get(name) for name in names]
    split = [split_prompt(question) for question in questions]
    full_prompts = [full for _, full in split]
    return RoutingDataset(
        query_ids=ids,
        prompts=[question for question, _ in split],
        categories=categories,
        sources=sources,
        models=[model_info(name, price) for name, price in zip(names, model_prices)],
        quality=quality,
        cost_usd=estimated_cost_usd(tokens_in, tokens_out, quality, model_prices),
        full_prompts=full_prompts if any(full is not None for full in full_prompts) else None,
        cost_estimated=[True] * len(names),
    )
