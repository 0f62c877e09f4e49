"""Label stored answers with an LLM judge (or any scorer) and keep each verdict as feedback from that source.

A server started with ``store_prompts: true`` keeps every decision's prompt and every
answer's text, the served one and the shadow models'.  :func:`label` reads the answers a
source has not judged yet (:meth:`crossroads.store.Store.labelling_work`), has them graded
``concurrency`` at a time, and stores each verdict at once with ``source`` (``judge:<model>``
or ``scorer:<spec>``) and, for a shadow answer, the model that gave it, so that a crash loses
nothing and a rerun resumes.  Users' feedback stays apart: reports read only source ``user``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.store import DuplicateFeedbackError

if TYPE_CHECKING:
    from crossroads.grading.scorers import Scorer
    from crossroads.store import Store

#: Failures quoted in the result (and the CLI's warnings); the rest are only counted.
MAX_FAILURES_KEPT = 20
#: Characters of a judge's answer quoted when it holds no rating.
EXCERPT_CHARS = 160


class Unrated(Exception):
    """One answer could not be graded (a judge gave no rating); the others go on."""


@dataclass(frozen=True)
class Item:
    """One answer to grade: the decision, the model whose answer it is (None: the served one), and the texts."""

    decision_id: str
    model: str | None
    prompt: str
    response: str


@dataclass
class LabelResult:
    """What a labelling run did, and how the store's decisions stood for it."""

    source: str
    counts: dict[str, int]  # Store.labelling_counts before the run
    labelled: int = 0
    failed: int = 0
    raced: int = 0  # labelled meanwhile by another run under the same source: not stored twice
    no_reference: int = 0
    qualities: list[float] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)
    failures: list[tuple[str, str | None, str]] = field(default_factory=list)  # the first MAX_FAILURES_KEPT
    elapsed_s: float = 0.0

    @property
    def mean_quality(self) -> float | None:
        return float(np.mean(self.qualities)) if self.qualities else None

    @property
    def mean_rating(self) -> float | None:
        return float(np.mean(self.ratings)) if self.ratings else None

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "labelled": self.labelled, "failed": self.failed,
                "already_labelled": self.counts["labelled"], "labelled_by_another_run": self.raced,
                "no_prompt": self.counts["no_prompt"], "no_text": self.counts["no_text"],
                "no_reference": self.no_reference, "mean_quality": self.mean_quality,
                "mean_rating": self.mean_rating, "elapsed_s": self.elapsed_s}


# -- graders --------------------------------------------------------------------------------
Grader = Callable[[Item, str | None], tuple[float, dict | None]]


def judge_grader(judge: Any) -> Grader:
    """Grade with an :class:`crossroads.grading.judge.LLMJudge`: its 1-10 rating as ``(r - 1) / 9``.

    An answer without a rating raises :class:`Unrated` quoting it; failing to reach the judge
    raises CrossroadsError, which stops the run.
    """
    from crossroads.grading.judge import parse_rating, rating_quality

    def grade(item: Item, reference: str | None) -> tuple[float, dict | None]:
        text = judge.ask(item.response, reference, question=item.prompt)
        try:
            rating = parse_rating(text, lenient=judge.lenient)
        except CrossroadsError:
            excerpt = " ".join(text.split())[:EXCERPT_CHARS]
            raise Unrated(f"the judge gave no 1-10 rating: {excerpt!r}" if excerpt
                          else "the judge answered with no text") from None
        return rating_quality(rating), {"rating": rating}

    return grade


def scorer_grader(scorer: Scorer) -> Grader:
    """Grade with any scorer; a scorer that refuses an answer raises :class:`Unrated` with its reason."""
    def grade(item: Item, reference: str | None) -> tuple[float, dict | None]:
        try:
            return scorer.score(item.response, reference, question=item.prompt), None
        except CrossroadsError as error:
            raise Unrated(str(error)) from None

    return grade


def load_references(path: str | Path) -> dict[str, str]:
    """Reference answers by prompt from a JSON Lines file of ``{"prompt": ..., "reference": ...}`` objects."""
    path = Path(path)
    if not path.is_file():
        raise CrossroadsError(f"--references {path}: no such file; give a JSON Lines file with one "
                              '{"prompt": ..., "reference": ...} object per line')
    references: dict[str, str] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise CrossroadsError(f"{path}:{number}: not JSON ({error})") from None
            if not (isinstance(row, dict) and isinstance(row.get("prompt"), str)
                    and isinstance(row.get("reference"), str)):
                raise CrossroadsError(f'{path}:{number}: expected {{"prompt": "...", "reference": "..."}} (both text)')
            references[row["prompt"]] = row["reference"]
    if not references:
        raise CrossroadsError(f"--references {path} holds no reference answers")
    return references


# -- the run --------------------------------------------------------------------------------
def label(store: Store, grader: Grader, *, source: str, route: str | None = None, sample: int | None = None,
          seed: int = 0, concurrency: int = 4, references: dict[str, str] | None = None,
          needs_reference: bool = False, progress: Callable[[int, int], None] | None = None) -> LabelResult:
    """Grade the answers in ``store`` that ``source`` has not judged yet and store each verdict as feedback.

    ``sample`` labels at most that many, drawn uniformly with ``seed`` from the unlabelled
    answers (reservoir sampling: one pass, ``sample`` answers in memory).  ``references`` maps
    prompts to reference answers; with ``needs_reference``, answers to other prompts are
    skipped (counted in ``no_reference``).  Each label is committed as it is made (feedback
    with ``once``: two concurrent runs never store the same verdict twice).  ``progress`` is
    called with (done, total).  A grader error that is not :class:`Unrated` (the judge cannot
    be reached) stops the run with that error, after the labels already stored; so does every
    answer failing.
    """
    if route is not None and route not in store.routes():
        known = ", ".join(store.routes()) or "none: the store is empty"
        raise CrossroadsError(f"unknown route {route!r}: the store's routes are {known}")
    if sample is not None and sample < 1:
        raise CrossroadsError(f"sample must be at least 1, got {sample}")
    counts = store.labelling_counts(source, route=route)
    result = LabelResult(source, counts)
    todo = counts["answers"] - counts["labelled"]
    total = todo if sample is None else min(sample, todo)
    started = time.perf_counter()
    state = {"done": 0, "fatal": None}
    lock = threading.Lock()

    def one(item: Item) -> tuple[str, str | None, str] | None:
        """Grade and store one answer; its failure, if it failed."""
        if state["fatal"] is not None:
            return None
        reference = references.get(item.prompt) if references is not None else None
        if needs_reference and reference is None:
            with lock:
                result.no_reference += 1
                _advance(state, progress, total)
            return None
        try:
            quality, payload = grader(item, reference)
            store.add_feedback(item.decision_id, reward=None, quality=quality, payload=payload,
                               created_s=time.time(), once=True, source=source, model=item.model)
        except Unrated as error:
            with lock:
                result.failed += 1
                _advance(state, progress, total)
            return item.decision_id, item.model, str(error)
        except DuplicateFeedbackError:
            with lock:
                result.raced += 1
                _advance(state, progress, total)
            return None
        except CrossroadsError as error:
            with lock:
                state["fatal"] = state["fatal"] or error
            return None
        with lock:
            result.labelled += 1
            result.qualities.append(quality)
            if payload and "rating" in payload:
                result.ratings.append(payload["rating"])
            _advance(state, progress, total)
        return None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for chunk in _work(store, source, route, sample, seed):
            failures = [failure for failure in pool.map(one, chunk) if failure is not None]  # in the work's order
            result.failures.extend(failures[:MAX_FAILURES_KEPT - len(result.failures)])
            if state["fatal"] is not None:
                break
    result.elapsed_s = time.perf_counter() - started
    if state["fatal"] is not None:
        raise CrossroadsError(f"{state['fatal']} ({result.labelled} labels were stored before; rerun to resume)")
    graded = result.labelled + result.failed
    if graded and not result.labelled:
        decision_id, model, reason = result.failures[0]
        raise CrossroadsError(f"every one of the {result.failed} answers failed, none was stored; the first "
                              f"(decision {decision_id}{'' if model is None else ', model ' + model}): {reason}")
    return result


def _advance(state: dict, progress: Callable[[int, int], None] | None, total: int) -> None:
    state["done"] += 1
    if progress is not None:
        progress(state["done"], total)


def _work(store: Store, source: str, route: str | None, sample: int | None, seed: int) -> Iterator[list[Item]]:
    """The unlabelled answers in pages; with ``sample``, one page of a seeded uniform sample of them."""
    pages = ([Item(*row) for row in page] for page in store.labelling_work(source, route=route))
    if sample is None:
        yield from pages
        return
    rng = np.random.default_rng(seed)
    reservoir: list[tuple[int, Item]] = []
    seen = 0
    for page in pages:
        for item in page:
            if len(reservoir) < sample:
                reservoir.append((seen, item))
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < sample:
                    reservoir[slot] = (seen, item)
            seen += 1
    yield [item for _, item in sorted(reservoir, key=lambda pair: pair[0])]
