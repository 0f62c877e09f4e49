"""Replay a dataset's queries through a running ``crossroads serve`` and send back what each answer was worth.

With the server's models answered by the recorded upstream
(:class:`crossroads.upstream.recorded.Recording`), every counterfactual is known: what
each request would have cost and scored on every model.  :func:`replay` sends the
requests with the official ``openai`` SDK (``concurrency`` at a time, from one event loop), then posts each
answer's quality to ``/v1/feedback``: the recorded quality of the model that answered
(``feedback="quality"``), a scorer's verdict on the returned text, or nothing.
:class:`ReplayResult` holds what happened and the truth a report is checked against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.upstream.recorded import Recording

#: What ``feedback`` may be besides a scorer spec.
FEEDBACK_MODES = ("quality", "none")


@dataclass
class Replayed:
    """One replayed request: the dataset row, the server's decision and answer, and the feedback sent."""

    row: int
    status: str  # ok, or error
    decision_id: str | None = None
    model: str | None = None
    latency_s: float = 0.0
    cost_usd: float | None = None
    quality: float | None = None  # the feedback sent
    error: str | None = None


@dataclass
class ReplayResult:
    """Every replayed request, the wall time, and the truth over the rows replayed."""

    requests: list[Replayed]
    elapsed_s: float
    models: list[str]
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> list[Replayed]:
        return [r for r in self.requests if r.status == "ok"]

    def summary(self) -> dict[str, Any]:
        answered = self.answered
        latencies = np.array([r.latency_s for r in answered])
        qualities = [r.quality for r in answered if r.quality is not None]
        return {
            "requests": len(self.requests), "answered": len(answered), "errors": len(self.requests) - len(answered),
            "requests_per_s": len(self.requests) / self.elapsed_s if self.elapsed_s else None,
            "latency_p50_s": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "spend_usd": float(sum(r.cost_usd or 0.0 for r in answered)),
            "mean_quality_sent": float(np.mean(qualities)) if qualities else None,
            "feedback_sent": len(qualities),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "truth": self.truth, "requests": [asdict(r) for r in self.requests]}


def replay(recording: Recording, url: str, route: str, *, requests: int, concurrency: int = 8,
           feedback: str = "quality", seed: int = 0, api_key: str | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Send ``requests`` of ``recording``'s queries (drawn with ``seed``) to ``route`` of the server at ``url``.

    ``url`` is the server's OpenAI base URL (``http://127.0.0.1:PORT/v1``).  Queries are
    drawn without replacement while there are enough, with replacement beyond.  A
    request the server refuses as the client's mistake (4xx: an unknown route, a bad
    key) stops the replay with that message; an upstream failure (5xx) is counted and
    the replay goes on.  ``progress`` is called with the number of requests done.
    The requests go out from one event loop (``openai.AsyncOpenAI``), ``concurrency`` at a
    time: threads would spend the client's CPU contending for the interpreter's lock.
    """
    dataset = recording.dataset
    grade = _grader(feedback, recording)
    rng = np.random.default_rng(seed)
    n = dataset.n_queries
    rows = rng.choice(n, size=requests, replace=requests > n)
    started = time.perf_counter()
    refused: list[str] = []
    results = asyncio.run(_replay_rows(recording, rows, url, route, concurrency, grade, api_key, refused, progress))
    elapsed = time.perf_counter() - started
    if refused:
        raise CrossroadsError(f"the server at {url} refused a request: {refused[0]}")
    if not any(r.status == "ok" for r in results):
        raise CrossroadsError(f"none of the {len(results)} requests was answered; the first error: {results[0].error}")
    return ReplayResult(results, elapsed, dataset.model_names, truth=truth(recording, rows))


async def _replay_rows(recording: Recording, rows: np.ndarray, url: str, route: str, concurrency: int,
                       grade: Callable | None, api_key: str | None, refused: list[str],
                       progress: Callable[[int], None] | None) -> list[Replayed]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=api_key or "crossroads-replay", max_retries=0, timeout=120.0)
    slots = asyncio.Semaphore(concurrency)
    done = [0]

    async def one(row: int) -> Replayed:
        async with slots:
            if refused:
                return Replayed(row, "error", error="not sent: the server refused an earlier request")
            record = await _send(client, recording, row, route, grade, refused)
        done[0] += 1
        if progress is not None:
            progress(done[0])
        return record

    try:
        return list(await asyncio.gather(*(one(int(row)) for row in rows)))
    finally:
        await client.close()


def truth(recording: Recording, rows: np.ndarray) -> dict[str, Any]:
    """What the replayed rows would have cost and scored on each model (the twin's token counts and prices)."""
    costs = recording.cost_matrix()[rows]
    quality = recording.dataset.quality[rows]
    return {"always": {model: {"spend_usd": float(np.nansum(costs[:, j])),
                               "mean_quality": float(np.nanmean(quality[:, j]))}
                       for j, model in enumerate(recording.dataset.model_names)}}


async def _send(client: Any, recording: Recording, row: int, route: str, grade: Callable | None,
                refused: list[str]) -> Replayed:
    import openai

    dataset = recording.dataset
    prompt = dataset.prompts[row]
    started = time.perf_counter()
    try:
        completion = await client.chat.completions.create(
            model=route, messages=[{"role": "user", "content": prompt}],
            extra_body={"crossroads": {"category": dataset.categories[row]}})
    except openai.APIStatusError as error:
        message = _message(error)
        if 400 <= error.status_code < 500:
            refused.append(f"HTTP {error.status_code}: {message}")
        return Replayed(row, "error", latency_s=time.perf_counter() - started, error=message)
    except openai.APIConnectionError as error:
        refused.append(f"cannot reach it ({error}); is `crossroads serve` running there?")
        return Replayed(row, "error", error=str(error))
    latency_s = time.perf_counter() - started
    details = (completion.model_extra or {}).get("crossroads") or {}
    model, decision_id = details.get("model") or completion.model, details.get("decision_id")
    record = Replayed(row, "ok", decision_id, model, latency_s, details.get("cost_usd"))
    if grade is not None and decision_id:
        text = (completion.choices[0].message.content or "") if completion.choices else ""
        record.quality = await grade(row, model, prompt, text)
        # feedback has no SDK method: its generic post shares the SDK's connections (cheaper than a second client)
        try:
            await client.post("feedback", body={"decision_id": decision_id, "quality": record.quality}, cast_to=dict)
        except openai.APIStatusError as error:
            message = f"feedback on {decision_id}: HTTP {error.status_code}: {_message(error)}"
            record.quality, record.error = None, message
            if error.status_code < 500:
                refused.append(message)
        except openai.APIConnectionError as error:
            record.quality, record.error = None, f"feedback on {decision_id}: {error}"
            refused.append(f"cannot reach it ({error}); is `crossroads serve` still running there?")
    return record


def _grader(feedback: str, recording: Recording) -> Callable | None:
    """What each answer is worth (awaitable): its recorded quality, a scorer's verdict on its text (in a worker
    thread: a scorer may take its time), or None (no feedback)."""
    if feedback == "none":
        return None
    if feedback == "quality":
        async def recorded(row: int, model: str, prompt: str, text: str) -> float:
            return float(recording.quality(row, model))

        return recorded
    from crossroads.grading.scorers import SCORERS

    scorer = SCORERS.build(feedback)
    if scorer.needs_reference:
        raise CrossroadsError(f"--feedback {feedback}: this scorer compares answers with a reference answer, and "
                              f"a replayed dataset holds none; use `quality` or a scorer that needs no reference")

    async def scored(row: int, model: str, prompt: str, text: str) -> float:
        return float(await asyncio.to_thread(scorer.score, text, question=prompt))

    return scored


def _message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(error)
