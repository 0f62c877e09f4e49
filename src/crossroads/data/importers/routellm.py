"""RouteLLM's MMLU and GSM8K response files (lm-sys/RouteLLM, ``routellm/evals/``).

Each row holds a prompt and one boolean correctness column per model
(GPT-4-1106 and Mixtral-8x7B-Instruct).  Prompts listed in
``contaminated_prompts.jsonl`` (``eval_prompt``) are dropped, as RouteLLM's
``benchmarks.py`` does.  The files record no cost: it is estimated from the
price table and token counts (see docs/data-format.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.data.importers.common import (
    estimated_cost_usd,
    existing,
    model_info,
    parse_quality,
    price_overrides,
    read_contaminated,
    read_csv,
)
from crossroads.data.pricing import price_for
from crossroads.data.prompts import split_prompt
from crossroads.errors import DataFormatError
from crossroads.objective.cost import estimate_tokens, estimate_tokens_many

#: RouteLLM's MMLU prompts: 5 examples from the subject's dev set, reduced until they
#: fit 1,536 tokens, then the question; the answer is one generated token.
MMLU_SHOTS = 5
MMLU_FEW_SHOT_TOKEN_LIMIT = 1536
MMLU_OUTPUT_TOKENS = 1
#: RouteLLM's GSM8K prompts: 8 worked examples from the train set, then the question.
GSM8K_SHOTS = 8
CONTAMINATED_FILE = "contaminated_prompts.jsonl"


def load_mmlu(path: Path, *, decontaminate: bool = True, prices: str | Path | None = None) -> RoutingDataset:
    """RouteLLM MMLU: a directory holding ``responses/mmlu_<subject>.csv`` and ``contaminated_prompts.jsonl``.

    Category is the subject; ids are ``routellm-mmlu/<subject>/<row>`` (row in its CSV file, from 0).
    """
    root = path.parent if path.name == "responses" else path
    files = sorted((root / "responses").glob("mmlu_*.csv"))
    if not files:
        raise DataFormatError(root, "a directory holding responses/mmlu_<subject>.csv files", found="none")
    contaminated = _contaminated(root, decontaminate)
    ids, prompts, full_prompts, categories, sources, cells = [], [], [], [], [], []
    models: list[str] | None = None
    tokens_in: list[float] = []
    for file in files:
        header, rows = read_csv(file, ["prompt"])
        file_models = [name for name in header if name != "prompt"]
        if models is None:
            models = file_models
        elif file_models != models:
            raise DataFormatError(file, f"the model columns of {files[0].name} ({', '.join(models)})", row=0, found=", ".join(file_models))
        subject = file.stem.removeprefix("mmlu_")
        kept = [(i, row) for i, row in enumerate(rows) if row["prompt"] not in contaminated]
        question_tokens = estimate_tokens_many(row["prompt"] for _, row in kept)
        few_shot = _mmlu_few_shot_tokens(subject, question_tokens)
        tokens_in.extend(question_tokens + few_shot)
        for i, row in kept:
            question, full = split_prompt(row["prompt"])
            ids.append(f"routellm-mmlu/{subject}/{i}")
            prompts.append(question)
            full_prompts.append(full)
            categories.append(subject)
            sources.append(f"routellm-mmlu/{file.name}")
            cells.append([parse_quality(row[name], file, i + 1, name) for name in models])
    assert models is not None
    quality = np.array(cells, dtype=np.float64).reshape(len(ids), len(models))
    tokens_out = np.full(quality.shape, float(MMLU_OUTPUT_TOKENS))
    return _dataset(ids, prompts, full_prompts, categories, sources, models, quality, np.array(tokens_in), tokens_out, None, prices)


def load_gsm8k(path: Path, *, decontaminate: bool = True, prices: str | Path | None = None) -> RoutingDataset:
    """RouteLLM GSM8K: ``gsm8k_responses.csv`` (or its directory) with ``contaminated_prompts.jsonl`` beside it.

    Keeps each model's response (``<model>_response`` columns); output tokens for the
    cost estimate come from the response lengths.
    """
    file = path / "gsm8k_responses.csv" if path.is_dir() else path
    existing(file, "RouteLLM's gsm8k_responses.csv")
    header, rows = read_csv(file, ["prompt"])
    models = [name for name in header if name != "prompt" and not name.endswith("_response")]
    if not models:
        raise DataFormatError(file, "one correctness column per model after 'prompt'", row=0, found=", ".join(header))
    contaminated = _contaminated(file.parent, decontaminate)
    kept = [(i, row) for i, row in enumerate(rows) if row["prompt"] not in contaminated]
    ids, prompts, full_prompts, cells, responses = [], [], [], [], []
    for i, row in kept:
        question, full = split_prompt(row["prompt"])
        ids.append(f"routellm-gsm8k/{i}")
        prompts.append(question)
        full_prompts.append(full)
        cells.append([parse_quality(row[name], file, i + 1, name) for name in models])
        responses.append([row.get(f"{name}_response") for name in models])
    quality = np.array(cells, dtype=np.float64).reshape(len(ids), len(models))
    tokens_out = np.array([[estimate_tokens(text) for text in row] for row in responses], dtype=np.float64).reshape(quality.shape)
    question_tokens = estimate_tokens_many(f"Question: {row['prompt']}\nAnswer:" for _, row in kept)
    # The worked examples are GSM8K train items: sized like an average question plus an average answer.
    example_tokens = (question_tokens.mean() + np.nanmean(tokens_out)) if len(kept) else 0.0
    tokens_in = question_tokens + GSM8K_SHOTS * example_tokens
    n = len(ids)
    has_responses = any(f"{name}_response" in header for name in models)
    return _dataset(
        ids, prompts, full_prompts, ["gsm8k"] * n, [f"routellm-gsm8k/{file.name}"] * n,
        models, quality, tokens_in, tokens_out, responses if has_responses else None, prices,
    )


def _contaminated(directory: Path, decontaminate: bool) -> set[str]:
    if not decontaminate:
        return set()
    file = directory / CONTAMINATED_FILE
    if not file.exists():
        raise DataFormatError(
            file, "RouteLLM's list of contaminated prompts to drop (pass decontaminate=False to keep every prompt)",
            found="no such file",
        )
    return read_contaminated(file)


def _mmlu_few_shot_tokens(subject: str, question_tokens: np.ndarray) -> float:
    """Tokens of RouteLLM's 5-shot preamble for ``subject``: examples sized like the subject's questions."""
    header = estimate_tokens(f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n")
    example = (question_tokens.mean() if len(question_tokens) else 0.0) + 2  # + " B\n\n"
    return min(float(MMLU_FEW_SHOT_TOKEN_LIMIT), header + MMLU_SHOTS * example)


def _dataset(ids, prompts, full_prompts, categories, sources, models, quality, tokens_in, tokens_out, responses, prices) -> RoutingDataset:
    overrides = price_overrides(prices)
    model_prices = [price_for(name, overrides) for name in models]
    return RoutingDataset(
        query_ids=ids,
        prompts=prompts,
        categories=categories,
        sources=sources,
        models=[model_info(name, price) for name, price in zip(models, model_prices)],
        quality=quality,
        cost_usd=estimated_cost_usd(tokens_in, tokens_out, quality, model_prices),
        responses=responses,
        full_prompts=full_prompts if any(full is not None for full in full_prompts) else None,
        cost_estimated=[True] * len(models),
    )
