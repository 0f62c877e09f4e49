"""RouteLLM's MT-Bench evaluation: ``question.jsonl`` plus GPT-4 ``judgements.jsonl``.

``question.jsonl`` is FastChat's MT-Bench file (``question_id``, ``category``,
``turns`` = two user messages).  ``judgements.jsonl`` has one row per question,
model and turn with the judge's ``score`` from 1 to 10 (-1 when the judge gave no
rating).  A query is routed on its first turn; its quality is the mean over both
turns of ``(score - 1) / 9``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.data.importers.common import (
    estimated_cost_usd,
    existing,
    model_info,
    price_overrides,
    read_contaminated,
    read_json_lines,
    require_keys,
)
from crossroads.data.pricing import price_for
from crossroads.data.prompts import split_prompt
from crossroads.errors import DataFormatError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, estimate_tokens

SCORE_MIN, SCORE_MAX = 1, 10
NO_RATING = -1

_TURN1_ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.DOTALL)
_CONVERSATION = re.compile(
    r"<\|The Start of Assistant A's Conversation with User\|>(.*?)<\|The End of Assistant A's Conversation with User\|>", re.DOTALL
)
_ASSISTANT_TURN = re.compile(r"### Assistant A:\n(.*?)(?=\n\n### User:|\Z)", re.DOTALL)


def quality_from_score(score: float) -> float:
    """An MT-Bench judge score 1..10 mapped linearly to quality 0..1."""
    return (score - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)


def load_mtbench(path: Path, *, decontaminate: bool = True, prices: str | Path | None = None) -> RoutingDataset:
    """MT-Bench questions and judgements from directory ``path``; contaminated prompts dropped when listed.

    Costs are estimated: both user turns and the first answer go in (the second turn
    resends the conversation), both answers come out; answer lengths are read from
    the judge prompts, which quote them.
    """
    questions_file = existing(path / "question.jsonl", "MT-Bench's question.jsonl (question_id, category, turns)")
    judgements_file = existing(path / "judgements.jsonl", "RouteLLM's MT-Bench judgements.jsonl")
    all_questions = _read_questions(questions_file)
    questions = all_questions
    contaminated_file = path / "contaminated_prompts.jsonl"
    if decontaminate and contaminated_file.exists():
        contaminated = read_contaminated(contaminated_file)
        questions = {qid: q for qid, q in all_questions.items() if not (set(q["turns"][:2]) & contaminated)}

    models: dict[str, None] = {}
    scores: dict[tuple, list[float]] = defaultdict(list)  # (qid, model, turn) -> qualities
    answer_tokens: dict[tuple, int] = {}  # (qid, model, turn) -> tokens of that answer
    for number, record in read_json_lines(judgements_file):
        record = require_keys(judgements_file, record, ["question_id", "model", "score", "turn"], number)
        qid, model, turn, score = record["question_id"], record["model"], record["turn"], record["score"]
        if not isinstance(qid, (int, str)) or qid not in all_questions:
            raise DataFormatError(judgements_file, "a question_id listed in question.jsonl", row=number, found=repr(qid))
        if turn not in (1, 2):
            raise DataFormatError(judgements_file, "'turn' 1 or 2", row=number, found=repr(turn))
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not (
            score == NO_RATING or SCORE_MIN <= score <= SCORE_MAX
        ):
            raise DataFormatError(judgements_file, f"'score' from {SCORE_MIN} to {SCORE_MAX} (or {NO_RATING})", row=number, found=repr(score))
        if not isinstance(model, str):
            raise DataFormatError(judgements_file, "'model' as a string", row=number, found=repr(model))
        if qid not in questions:
            continue  # dropped as contaminated
        models.setdefault(model)
        if score != NO_RATING:
            scores[(qid, model, turn)].append(quality_from_score(float(score)))
        for answer_turn, tokens in _answer_tokens(record.get("user_prompt"), turn).items():
            answer_tokens.setdefault((qid, model, answer_turn), tokens)

    names = list(models)
    qids = list(questions)
    quality = np.full((len(qids), len(names)), np.nan)
    tokens_in = np.zeros(quality.shape)
    tokens_out = np.zeros(quality.shape)
    for i, qid in enumerate(qids):
        turn1, turn2 = (estimate_tokens(text) for text in questions[qid]["turns"][:2])
        for j, model in enumerate(names):
            per_turn = [np.mean(scores[(qid, model, t)]) for t in (1, 2) if scores.get((qid, model, t))]
            quality[i, j] = np.mean(per_turn) if per_turn else math.nan
            answer1 = answer_tokens.get((qid, model, 1), ASSUMED_OUTPUT_TOKENS)
            answer2 = answer_tokens.get((qid, model, 2), ASSUMED_OUTPUT_TOKENS)
            tokens_in[i, j] = turn1 + (turn1 + answer1 + turn2)
            tokens_out[i, j] = answer1 + answer2
    overrides = price_overrides(prices)
    model_prices = [price_for(name, overrides) for name in names]
    split = [split_prompt(questions[qid]["turns"][0]) for qid in qids]
    full_prompts = [full for _, full in split]
    return RoutingDataset(
        query_ids=[f"routellm-mtbench/{qid}" for qid in qids],
        prompts=[question for question, _ in split],
        categories=[str(questions[qid]["category"]) for qid in qids],
        sources=["routellm-mtbench/judgements.jsonl"] * len(qids),
        models=[model_info(name, price) for name, price in zip(names, model_prices)],
        quality=quality,
        cost_usd=estimated_cost_usd(tokens_in, tokens_out, quality, model_prices),
        full_prompts=full_prompts if any(full is not None for full in full_prompts) else None,
        cost_estimated=[True] * len(names),
    )


def _read_questions(file: Path) -> dict[object, dict]:
    questions: dict[object, dict] = {}
    for number, record in read_json_lines(file):
        record = require_keys(file, record, ["question_id", "category", "turns"], number)
        turns = record["turns"]
        if not isinstance(record["question_id"], (int, str)):
            raise DataFormatError(file, "'question_id' as a number or string", row=number, found=repr(record["question_id"]))
        if not (isinstance(turns, list) and len(turns) >= 2 and all(isinstance(turn, str) for turn in turns)):
            raise DataFormatError(file, "'turns' as a list of two user messages", row=number, found=repr(turns)[:80])
        if record["question_id"] in questions:
            raise DataFormatError(file, "a unique question_id", row=number, found=f"{record['question_id']!r} again")
        questions[record["question_id"]] = record
    return questions


def _answer_tokens(user_prompt: object, turn: int) -> dict[int, int]:
    """Token counts of the answers a judge prompt quotes: turn 1's, and on turn 2 both."""
    if not isinstance(user_prompt, str):
        return {}
    if turn == 1:
        match = _TURN1_ANSWER.search(user_prompt)
        return {1: estimate_tokens(match.group(1))} if match else {}
    conversation = _CONVERSATION.search(user_prompt)
    answers = _ASSISTANT_TURN.findall(conversation.group(1).rstrip()) if conversation else []
    return {t + 1: estimate_tokens(answer) for t, answer in enumerate(answers[:2])}
