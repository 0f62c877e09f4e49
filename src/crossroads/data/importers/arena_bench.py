"""Arena-Hard's first bench (lmarena/arena-hard-auto ``data/arena-bench-v1/``): GPT-4 single-answer ratings.

The directory holds ``question.jsonl`` (``question_id``, ``category``, ``turns`` = one
user message), ``model_judgment/<file>.jsonl`` (``question_id``, ``model``,
``judgment``, ``score`` from 1 to 10, ``user_prompt`` quoting the answer) and
``model_answer/<file>.jsonl`` (FastChat answers: ``model_id``, ``choices[0].turns[0]``).

Decisions, so that a router trained here means the same as one trained on MT-Bench:

- quality = ``(score - 1) / 9``, the mapping of the ``routellm-mtbench`` importer (1 -> 0.0,
  10 -> 1.0).  A missing score (null: the judge gave no ``[[rating]]``, 0-6 per model),
  an unparsable one or -1 (FastChat's "no rating") is a missing outcome, never 0.
- the pool is the judged models, named as the judgments' ``model`` field names them
  (``gpt-4-1106-preview``, whose file is ``gpt-4-turbo.jsonl``).  Answers of models
  nobody judged (vicuna-7b/13b) are not outcomes and are not read.
- responses: each judged model's answer (``model_answer``, matched by ``model_id``;
  else the answer the judge prompt quotes).  Extra turns some answer records carry
  are ignored: the question has one turn.
- cost (estimated, the set records none): question tokens in, answer tokens out
  (:func:`estimate_tokens`; 256 when the answer is nowhere), at each model's price:
  ``prices=`` first, then the list price in crossroads' model catalogue, then
  :data:`LIST_PRICES` below, then the repository's price table or the model's stated size.
- category: a question's ``cluster`` field, else its ``category`` (``arena-bench-v1``
  in the published file), else ``arena-hard``.  Id ``arena-bench/<question_id>``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.data.descriptors import catalog
from crossroads.data.importers.common import (
    estimated_cost_usd,
    model_info,
    price_overrides,
    read_json_lines,
    require_keys,
)
from crossroads.data.importers.routellm_mtbench import SCORE_MAX, SCORE_MIN, quality_from_score
from crossroads.data.pricing import price_for, size_based_price
from crossroads.data.prompts import split_prompt
from crossroads.errors import DataFormatError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, Price, estimate_tokens

NO_RATING = -1
DEFAULT_CATEGORY = "arena-hard"
EXPECTED = ("an arena-hard-auto bench directory: question.jsonl, model_judgment/<model>.jsonl "
            "(and optionally model_answer/<model>.jsonl)")
_ANSWER_START, _ANSWER_END = "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]"


def _list(usd_in: float, usd_out: float, where: str) -> Price:
    return Price(usd_in, usd_out, f"public list price: {where}")


#: Prices (US$ per million tokens) of the judged models that the catalogue does not list.
LIST_PRICES: dict[str, Price] = {
    "claude-2.1": _list(8.0, 24.0, "Anthropic, claude-2.1"),
    # Vertex AI billed PaLM 2 per character: $0.0005 per 1,000 characters in and out (2023),
    # about $2 per million tokens at 4 characters a token.
    "palm-2-chat-bison-001": _list(2.0, 2.0, "Google Vertex AI, PaLM 2 for Chat, per-character price x 4"),
    "Starling-LM-7B-alpha": size_based_price(7),
    "openchat_3.5": size_based_price(7),  # a Mistral-7B fine-tune; its name states no size
    "vicuna-33b-v1.3": size_based_price(33),
}


def arena_price(name: str, overrides: dict[str, Price] | None = None) -> Price | None:
    """Price of ``name``: ``overrides``, the catalogue's list price, :data:`LIST_PRICES`, then :func:`price_for`."""
    if overrides and name in overrides:
        return overrides[name]
    known = catalog().get(name.lower())
    if known is not None and known.price_per_mtok_in is not None and known.price_per_mtok_out is not None:
        return Price(known.price_per_mtok_in, known.price_per_mtok_out, f"model catalogue list price ({known.key})")
    return LIST_PRICES.get(name) or price_for(name)


def load_arena_bench(path: Path, *, prices: str | Path | None = None) -> RoutingDataset:
    """Questions, judgments and answers of the arena-bench directory ``path``; one row per question."""
    questions_file, judgments_dir = path / "question.jsonl", path / "model_judgment"
    judgment_files = sorted(judgments_dir.glob("*.jsonl")) if judgments_dir.is_dir() else []
    if not questions_file.is_file() or not judgment_files:
        missing = [name for name, absent in (("question.jsonl", not questions_file.is_file()),
                                              ("model_judgment/*.jsonl", not judgment_files)) if absent]
        raise DataFormatError(path, EXPECTED, found=f"no {' and no '.join(missing)}")
    questions = _read_questions(questions_file)
    row_of = {qid: i for i, qid in enumerate(questions)}

    names: list[str] = []
    cells: dict[tuple[int, int], tuple[float, str | None]] = {}  # (row, column) -> (quality, quoted answer)
    for file in judgment_files:
        for number, record in read_json_lines(file):
            record = require_keys(file, record, ["question_id", "model", "score"], number)
            qid, model = record["question_id"], record["model"]
            if not isinstance(model, str) or not model:
                raise DataFormatError(file, "'model' as a model name", row=number, found=repr(model))
            if not isinstance(qid, (int, str)) or qid not in row_of:
                raise DataFormatError(file, "a question_id listed in question.jsonl", row=number, found=repr(qid)[:60])
            if model not in names:
                names.append(model)
            cell = (row_of[qid], names.index(model))
            if cell in cells:
                raise DataFormatError(file, "one judgment per question and model", row=number,
                                      found=f"{qid!r} of {model!r} again")
            cells[cell] = (_quality(record["score"], file, number), _quoted_answer(record.get("user_prompt")))

    answers = _read_answers(path / "model_answer", set(names), row_of)
    quality = np.full((len(questions), len(names)), np.nan)
    tokens_out = np.full(quality.shape, float(ASSUMED_OUTPUT_TOKENS))
    responses: list[list[str | None]] = [[None] * len(names) for _ in questions]
    for (i, j), (value, quoted) in cells.items():
        quality[i, j] = value
        text = answers.get((i, names[j]), quoted)
        responses[i][j] = text
        if text is not None:
            tokens_out[i, j] = estimate_tokens(text)
    texts = [record["turns"][0] for record in questions.values()]
    tokens_in = np.array([estimate_tokens(text) for text in texts], dtype=np.float64)
    overrides = price_overrides(prices)
    model_prices = [arena_price(name, overrides) for name in names]
    split = [split_prompt(text) for text in texts]
    full_prompts = [full for _, full in split]
    return RoutingDataset(
        query_ids=[f"arena-bench/{qid}" for qid in questions],
        prompts=[question for question, _ in split],
        categories=[_category(record) for record in questions.values()],
        sources=["arena-bench/model_judgment"] * len(questions),
        models=[model_info(name, price) for name, price in zip(names, model_prices)],
        quality=quality,
        cost_usd=estimated_cost_usd(tokens_in, tokens_out, quality, model_prices),
        responses=responses,
        full_prompts=full_prompts if any(full is not None for full in full_prompts) else None,
        cost_estimated=[True] * len(names),
    )


def _read_questions(file: Path) -> dict[int | str, dict]:
    questions: dict[int | str, dict] = {}
    for number, record in read_json_lines(file):
        record = require_keys(file, record, ["question_id", "turns"], number)
        qid, turns = record["question_id"], record["turns"]
        if not isinstance(qid, (int, str)):
            raise DataFormatError(file, "'question_id' as a string or number", row=number, found=repr(qid)[:60])
        if not (isinstance(turns, list) and turns and isinstance(turns[0], str)):
            raise DataFormatError(file, "'turns' as a list holding the user message", row=number, found=repr(turns)[:80])
        if qid in questions:
            raise DataFormatError(file, "a unique question_id", row=number, found=f"{qid!r} again")
        questions[qid] = record
    return questions


def _category(record: dict) -> str:
    for field in ("cluster", "category"):
        if record.get(field) not in (None, ""):
            return str(record[field])
    return DEFAULT_CATEGORY


def _quality(score: object, file: Path, row: int) -> float:
    """Quality of a judge's score; NaN when the judge gave none (null, empty, unparsable text, -1)."""
    if isinstance(score, str):
        try:
            score = float(score.strip())
        except ValueError:
            return math.nan
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score) or score == NO_RATING:
        return math.nan
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise DataFormatError(file, f"'score' from {SCORE_MIN} to {SCORE_MAX} (or null)", row=row, found=repr(score))
    return quality_from_score(float(score))


def _quoted_answer(user_prompt: object) -> str | None:
    """The answer a judge prompt quotes between arena-hard's answer markers, else None."""
    if not isinstance(user_prompt, str):
        return None
    start = user_prompt.find(_ANSWER_START)
    end = user_prompt.rfind(_ANSWER_END)
    return user_prompt[start + len(_ANSWER_START):end] if 0 <= start < end else None


def _read_answers(directory: Path, models: set[str], row_of: dict) -> dict[tuple[int, str], str]:
    """``(row, model) -> first answer`` of the judged ``models``, from FastChat answer files (none without them)."""
    answers: dict[tuple[int, str], str] = {}
    for file in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        for number, record in read_json_lines(file):
            record = require_keys(file, record, ["question_id", "choices"], number)
            model = record.get("model_id", file.stem)
            if model not in models:
                continue  # an answer nobody judged is not an outcome
            qid, choices = record["question_id"], record["choices"]
            if not isinstance(qid, (int, str)) or qid not in row_of:
                raise DataFormatError(file, "a question_id listed in question.jsonl", row=number, found=repr(qid)[:60])
            try:
                text = choices[0]["turns"][0]
            except (TypeError, LookupError):
                text = None
            if not isinstance(text, str):
                raise DataFormatError(file, "'choices[0].turns[0]' as the answer text", row=number, found=repr(choices)[:80])
            answers[(row_of[qid], model)] = text
    return answers
