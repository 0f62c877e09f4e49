"""crossroads' own dataset file: JSON Lines, a header line with the pool, then one line per query.

Header::

    {"crossroads": "routing-dataset", "version": 1, "n_queries": 2,
     "optional_fields": ["full_prompt", "response"],
     "models": [{"name": "gpt-4-1106-preview", "price_per_mtok_in": 10.0,
                 "price_per_mtok_out": 30.0, "cost_estimated": true, "description": ""}]}

Query::

    {"id": "routellm-gsm8k/0", "prompt": "...", "full_prompt": "...", "category": "gsm8k",
     "source": "routellm-gsm8k/gsm8k_responses.csv",
     "outcomes": {"gpt-4-1106-preview": {"quality": 1.0, "cost_usd": 0.0062, "response": "..."}}}

A missing outcome is absent (never a zero); so is a missing field of an outcome.  A log export
(``crossroads logs export``) also gives each query ``"logged": {"model": NAME, "propensity": P}``:
the model the server's route chose and the probability it gave that choice (null when not logged).
docs/data-format.md describes every field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.errors import DataFormatError

MAGIC = "routing-dataset"
VERSION = 1
OPTIONAL_FIELDS = ("full_prompt", "latency_s", "response", "logged")


def write_jsonl(dataset: RoutingDataset, path: str | Path) -> Path:
    """Write ``dataset`` to ``path`` in crossroads' JSON Lines format; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    present = {
        "full_prompt": dataset.full_prompts is not None,
        "latency_s": dataset.latency_s is not None,
        "response": dataset.responses is not None,
        "logged": dataset.logged,
    }
    header = {
        "crossroads": MAGIC,
        "version": VERSION,
        "n_queries": dataset.n_queries,
        "optional_fields": [name for name in OPTIONAL_FIELDS if present[name]],
        "models": [
            {
                "name": model.name,
                "price_per_mtok_in": model.price_per_mtok_in,
                "price_per_mtok_out": model.price_per_mtok_out,
                "cost_estimated": bool(estimated),
                "description": model.description,
            }
            for model, estimated in zip(dataset.models, dataset.cost_estimated)
        ],
    }
    names = dataset.model_names
    with path.open("w", encoding="utf-8") as handle:
        handle.write(_dumps(header) + "\n")
        for i in range(dataset.n_queries):
            line: dict = {"id": dataset.query_ids[i], "prompt": dataset.prompts[i]}
            if dataset.full_prompts is not None and dataset.full_prompts[i] is not None:
                line["full_prompt"] = dataset.full_prompts[i]
            line["category"] = dataset.categories[i]
            line["source"] = dataset.sources[i]
            if dataset.logged:
                served, propensity = int(dataset.served[i]), float(dataset.propensity[i])
                line["logged"] = {"model": names[served] if served >= 0 else None,
                                  "propensity": None if math.isnan(propensity) else propensity}
            outcomes = {}
            for j, name in enumerate(names):
                outcome = {}
                for key, array in (("quality", dataset.quality), ("cost_usd", dataset.cost_usd), ("latency_s", dataset.latency_s)):
                    if array is not None and not math.isnan(array[i, j]):
                        outcome[key] = float(array[i, j])
                if dataset.responses is not None and dataset.responses[i][j] is not None:
                    outcome["response"] = dataset.responses[i][j]
                if outcome:
                    outcomes[name] = outcome
            line["outcomes"] = outcomes
            handle.write(_dumps(line) + "\n")
    return path


def read_jsonl(path: str | Path) -> RoutingDataset:
    """Read a dataset written by :func:`write_jsonl` (or by hand in the same format)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "a crossroads JSONL file", found="a directory" if path.is_dir() else "no such file")
    try:
        with path.open(encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "UTF-8 encoded JSON Lines", found=str(exc)) from None
    if not lines:
        raise DataFormatError(path, f'a header line {{"crossroads": "{MAGIC}", ...}}', row=1, found="an empty file")
    header = _header(path, _loads(path, lines[0], 1))
    names = [model["name"] for model in header["models"]]
    column = {name: j for j, name in enumerate(names)}
    optional = set(header["optional_fields"])
    ids, prompts, full_prompts, categories, sources = [], [], [], [], []
    quality_rows, cost_rows, latency_rows, responses = [], [], [], []
    served, propensity = [], []
    seen: set[str] = set()
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        record = _loads(path, text, number)
        if not isinstance(record, dict):
            raise DataFormatError(path, "one query object per line", row=number, found=type(record).__name__)
        query_id = _string(path, record, "id", number)
        if query_id in seen:
            raise DataFormatError(path, "a unique 'id'", row=number, found=f"{query_id!r} again")
        seen.add(query_id)
        ids.append(query_id)
        prompts.append(_string(path, record, "prompt", number))
        full = record.get("full_prompt")
        if full is not None and not isinstance(full, str):
            raise DataFormatError(path, "'full_prompt' as a string", row=number, found=repr(full)[:60])
        full_prompts.append(full)
        categories.append(_string(path, record, "category", number, default=""))
        sources.append(_string(path, record, "source", number, default=f"crossroads/{path.name}"))
        chosen, probability = _logged(path, record.get("logged"), column, number)
        served.append(chosen)
        propensity.append(probability)
        outcomes = record.get("outcomes", {})
        if not isinstance(outcomes, dict):
            raise DataFormatError(path, "'outcomes' as an object keyed by model name", row=number, found=type(outcomes).__name__)
        quality = [math.nan] * len(names)
        cost = [math.nan] * len(names)
        latency = [math.nan] * len(names)
        response: list[str | None] = [None] * len(names)
        for name, outcome in outcomes.items():
            if name not in column:
                raise DataFormatError(path, f"outcomes of models listed in the header ({', '.join(names)})", row=number, found=repr(name))
            if not isinstance(outcome, dict):
                raise DataFormatError(path, f"the outcome of {name!r} as an object", row=number, found=type(outcome).__name__)
            j = column[name]
            quality[j] = _number(path, outcome, "quality", name, number, upper=1.0)
            cost[j] = _number(path, outcome, "cost_usd", name, number)
            latency[j] = _number(path, outcome, "latency_s", name, number)
            text_out = outcome.get("response")
            if text_out is not None and not isinstance(text_out, str):
                raise DataFormatError(path, f"the response of {name!r} as a string", row=number, found=repr(text_out)[:60])
            response[j] = text_out
        quality_rows.append(quality)
        cost_rows.append(cost)
        latency_rows.append(latency)
        responses.append(response)
    if header.get("n_queries") is not None and header["n_queries"] != len(ids):
        raise DataFormatError(path, f"{header['n_queries']} queries as the header says", found=f"{len(ids)} (is the file truncated?)")
    shape = (len(ids), len(names))
    logged = "logged" in optional or any(chosen >= 0 or not math.isnan(p) for chosen, p in zip(served, propensity))
    return RoutingDataset(
        query_ids=ids,
        prompts=prompts,
        categories=categories,
        sources=sources,
        models=[
            ModelInfo(m["name"], m.get("price_per_mtok_in"), m.get("price_per_mtok_out"), m.get("description") or "")
            for m in header["models"]
        ],
        quality=np.array(quality_rows, dtype=np.float64).reshape(shape),
        cost_usd=np.array(cost_rows, dtype=np.float64).reshape(shape),
        latency_s=np.array(latency_rows, dtype=np.float64).reshape(shape) if "latency_s" in optional else None,
        responses=responses if "response" in optional else None,
        full_prompts=full_prompts if "full_prompt" in optional or any(f is not None for f in full_prompts) else None,
        cost_estimated=[bool(m.get("cost_estimated", False)) for m in header["models"]],
        served=np.array(served, dtype=np.int64) if logged else None,
        propensity=np.array(propensity, dtype=np.float64) if logged else None,
    )


def read_logs(path: str | Path) -> RoutingDataset:
    """Read a log export (:func:`read_jsonl` of a file whose queries carry ``logged``); refuse any other dataset."""
    dataset = read_jsonl(path)
    if not dataset.logged:
        raise DataFormatError(path, "a log export, whose header lists 'logged' in optional_fields",
                              row=1, found="a dataset without logged choices (not a log export: write one with "
                              "crossroads logs export --store URL --out FILE.jsonl)")
    return dataset


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def _loads(path: Path, text: str, number: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, "one JSON object per line", row=number,
                              found=f"invalid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno}: "
                                    f"{text[max(0, exc.pos - 20):exc.pos + 20]!r})") from None


def _header(path: Path, header: object) -> dict:
    expected = f'a header line {{"crossroads": "{MAGIC}", "version": {VERSION}, "models": [...]}}'
    if not isinstance(header, dict) or header.get("crossroads") != MAGIC:
        raise DataFormatError(path, expected, row=1, found=repr(header)[:80])
    if header.get("version") != VERSION:
        raise DataFormatError(path, f"format version {VERSION}", row=1, found=repr(header.get("version")))
    models = header.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in models):
        raise DataFormatError(path, "'models' as a list of objects with a 'name'", row=1, found=repr(models)[:80])
    names = [m["name"] for m in models]
    if len(set(names)) != len(names):
        raise DataFormatError(path, "distinct model names", row=1, found=", ".join(names))
    for model in models:
        for key in ("price_per_mtok_in", "price_per_mtok_out"):
            value = model.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
                raise DataFormatError(path, f"{key} of {model['name']!r} as a non-negative number or null", row=1, found=repr(value))
    optional = header.setdefault("optional_fields", [])
    if not isinstance(optional, list) or not set(optional) <= set(OPTIONAL_FIELDS):
        raise DataFormatError(path, f"'optional_fields' drawn from {', '.join(OPTIONAL_FIELDS)}", row=1, found=repr(optional))
    return header


def _logged(path: Path, logged: object, column: dict[str, int], number: int) -> tuple[int, float]:
    """The column of the model a query's ``logged`` names (-1 when absent or null) and its propensity (NaN)."""
    if logged is None:
        return -1, math.nan
    if not isinstance(logged, dict):
        raise DataFormatError(path, "'logged' as an object {\"model\": NAME, \"propensity\": P}", row=number,
                              found=repr(logged)[:60])
    model, propensity = logged.get("model"), logged.get("propensity")
    if model is not None and model not in column:
        raise DataFormatError(path, f"logged model among the header's models ({', '.join(column)})", row=number,
                              found=repr(model)[:60])
    if propensity is not None and (isinstance(propensity, bool) or not isinstance(propensity, (int, float))
                                   or not 0.0 < propensity <= 1.0):
        raise DataFormatError(path, "logged propensity as a probability in (0, 1] or null", row=number,
                              found=repr(propensity)[:60])
    return (-1 if model is None else column[model]), (math.nan if propensity is None else float(propensity))


def _string(path: Path, record: dict, key: str, number: int, default: str | None = None) -> str:
    value = record.get(key, default)
    if not isinstance(value, str):
        raise DataFormatError(path, f"{key!r} as a string", row=number, found="nothing" if value is None else repr(value)[:60])
    return value


def _number(path: Path, outcome: dict, key: str, model: str, number: int, upper: float = math.inf) -> float:
    value = outcome.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= upper and math.isfinite(value)):
        bound = "a number in [0, 1]" if upper == 1.0 else "a non-negative number"
        raise DataFormatError(path, f"{key} of {model!r} as {bound}", row=number, found=repr(value))
    return float(value)
