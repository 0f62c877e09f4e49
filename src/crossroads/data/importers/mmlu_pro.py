"""MMLU-Pro evaluation results (TIGER-AI-Lab/MMLU-Pro ``eval_results/``).

One ``model_outputs_<model>_5shots.zip`` per model, holding one JSON list of
records ``question_id, question, options, answer, category, pred`` and the model's
text (``generated_text``, or ``model_outputs`` in some files).  A record is correct
when ``pred == answer``; a missing or null ``pred`` counts as wrong, a question
absent from a model's file is a missing outcome.  No prices: costs are estimated.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.data.importers.common import (
    estimated_cost_usd,
    model_info,
    price_overrides,
    require_keys,
    with_progress,
)
from crossroads.data.pricing import price_for
from crossroads.errors import DataFormatError
from crossroads.objective.cost import estimate_tokens

SHOTS = 5
OPTION_LETTERS = "ABCDEFGHIJKLMNOP"
TEXT_FIELDS = ("generated_text", "model_outputs")
REQUIRED = ("question_id", "question", "options", "answer", "category", "pred")
_ZIP_NAME = re.compile(r"model_outputs_(?P<model>.+?)_(?P<shots>\d+)shots?\.zip$")


def format_question(question: str, options: list[str]) -> str:
    """The question followed by its options lettered ``A.`` to ``J.``, one per line."""
    return "\n".join([question] + [f"{OPTION_LETTERS[k]}. {option}" for k, option in enumerate(options)])


def load_mmlu_pro(
    path: Path, *, responses: bool = False, prices: str | Path | None = None, progress: bool = False
) -> RoutingDataset:
    """Every model's zip in directory ``path`` (or ``path/eval_results``), or one zip; ids are ``mmlu-pro/<question_id>``.

    ``responses=True`` keeps each model's generated text (about 0.5 GB for 29 models).
    """
    directory = path / "eval_results" if (path / "eval_results").is_dir() else path
    if path.is_file():  # one model's zip
        directory, archives = path.parent, [path]
    else:
        archives = sorted(directory.glob("model_outputs_*.zip"))
    if not archives:
        raise DataFormatError(path, "a directory of model_outputs_<model>_5shots.zip files", found="none")
    questions: dict[int, tuple[str, str]] = {}  # question_id -> (prompt, category)
    per_model: list[tuple[str, dict[int, tuple[float, str | None]]]] = []
    for archive in with_progress(archives, "Reading MMLU-Pro results", progress):
        match = _ZIP_NAME.search(archive.name)
        model = match.group("model") if match else archive.stem
        outcomes: dict[int, tuple[float, str | None]] = {}
        for row, record in _records(archive):
            require_keys(archive, record, REQUIRED, row)
            qid = record["question_id"]
            if not isinstance(qid, int) or not isinstance(record["options"], list):
                raise DataFormatError(archive, "an integer question_id and a list of options", row=row, found=repr(qid))
            if qid not in questions:
                questions[qid] = (format_question(str(record["question"]), [str(o) for o in record["options"]]), str(record["category"]))
            pred = record["pred"]
            text = next((record[field] for field in TEXT_FIELDS if field in record), None)
            outcomes[qid] = (1.0 if pred is not None and pred == record["answer"] else 0.0, text)
        per_model.append((model, outcomes))

    qids = sorted(questions)
    row_of = {qid: i for i, qid in enumerate(qids)}
    names = [model for model, _ in per_model]
    quality = np.full((len(qids), len(names)), np.nan)
    tokens_out = np.full(quality.shape, np.nan)
    kept: list[list[str | None]] | None = [[None] * len(names) for _ in qids] if responses else None
    for j, (_, outcomes) in enumerate(per_model):
        for qid, (correct, text) in outcomes.items():
            i = row_of[qid]
            quality[i, j] = correct
            tokens_out[i, j] = np.nan if text is None else estimate_tokens(text)
            if kept is not None:
                kept[i][j] = text
    prompts = [questions[qid][0] for qid in qids]
    categories = [questions[qid][1] for qid in qids]
    tokens_in = _input_tokens(prompts, categories, tokens_out)
    overrides = price_overrides(prices)
    model_prices = [price_for(name, overrides) for name in names]
    return RoutingDataset(
        query_ids=[f"mmlu-pro/{qid}" for qid in qids],
        prompts=prompts,
        categories=categories,
        sources=[f"mmlu-pro/{directory.name}"] * len(qids),
        models=[model_info(name, price) for name, price in zip(names, model_prices)],
        quality=quality,
        cost_usd=estimated_cost_usd(tokens_in, tokens_out, quality, model_prices),
        responses=kept,
        cost_estimated=[True] * len(names),
    )


def _records(archive: Path):
    """``(row, record)`` for the dict records of the one JSON list in ``archive`` (rows from 1).

    Some published files end with a few bare strings (a per-category summary); they
    are not records and are skipped.
    """
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [name for name in bundle.namelist() if name.endswith(".json")]
            if len(members) != 1:
                raise DataFormatError(archive, "one .json file holding a list of records", found=", ".join(bundle.namelist()) or "an empty archive")
            data = json.loads(bundle.read(members[0]))
    except zipfile.BadZipFile as exc:
        raise DataFormatError(archive, "a zip archive", found=str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(archive, "a JSON list of records", found=f"invalid JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataFormatError(archive, "a JSON list of records", found=f"a JSON {type(data).__name__}")
    records = [(row, record) for row, record in enumerate(data, start=1) if not isinstance(record, str)]
    if data and not records:
        raise DataFormatError(archive, "a JSON list of records", found="only strings")
    return records


def _input_tokens(prompts: list[str], categories: list[str], tokens_out: np.ndarray) -> np.ndarray:
    """Prompt tokens: the question plus five worked examples of its category.

    The examples (chain-of-thought answers from the validation set) are not in the
    files; each is sized as the category's average question plus its average answer.
    """
    question_tokens = np.array([estimate_tokens(prompt) for prompt in prompts], dtype=np.float64)
    header = estimate_tokens("The following are multiple choice questions (with answers) about X. Think step by step "
                             'and then finish your answer with "the answer is (X)" where X is the correct letter choice.\n\n')
    labels = np.array(categories)
    tokens_in = question_tokens.copy()
    for category in set(categories):
        rows = labels == category
        answer = np.nanmean(tokens_out[rows]) if np.isfinite(tokens_out[rows]).any() else 0.0
        tokens_in[rows] += header + SHOTS * (question_tokens[rows].mean() + answer)
    return tokens_in
