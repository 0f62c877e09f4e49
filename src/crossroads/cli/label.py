"""``crossroads label``: score a server's stored answers with an LLM judge (or a scorer), kept as labelled feedback."""

from __future__ import annotations

import argparse
import sys

from crossroads.cli.common import at_least
from crossroads.errors import CrossroadsError

#: Where ``--judge MODEL`` without ``@base_url`` is asked, and the variable its key is read from.
DEFAULT_JUDGE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label",
        help="score stored answers with an LLM judge and store the verdicts as feedback",
        description="Read the answers a `crossroads serve` stored (start it with `store_prompts: true`: only "
        "decisions stored with their prompt and answers stored with their text can be judged), served and shadow "
        "ones alike, and have each graded: by an LLM judge on any OpenAI-compatible endpoint (--judge: MT-Bench's "
        "single-answer 1-10 rating, stored as quality (rating - 1) / 9, source judge:MODEL) or by a scorer "
        "(--scorer, source scorer:SPEC). Each verdict is stored at once as feedback from that source, apart from "
        "users' feedback (reports read only users'); answers that source judged already are skipped, so a rerun "
        "resumes where a stopped one ended.",
    )
    parser.add_argument("--store", required=True, metavar="URL",
                        help="the server's store: sqlite://PATH.db (or a .db path) or postgresql://...")
    graders = parser.add_mutually_exclusive_group(required=True)
    graders.add_argument("--judge", metavar="MODEL[@BASE_URL]",
                         help=f"the judge model and its OpenAI-compatible base URL (default {DEFAULT_JUDGE_URL}), "
                         "e.g. qwen2.5-7b-instruct@http://127.0.0.1:8000/v1")
    graders.add_argument("--scorer", metavar="SPEC",
                         help="a scorer instead of a judge (exact, number, choice, embedding, judge:...); those "
                         "that compare with a reference answer need --references")
    parser.add_argument("--references", metavar="FILE.jsonl",
                        help='reference answers: one {"prompt": ..., "reference": ...} per line, matched to the '
                        "stored prompts exactly; answers to other prompts are skipped by scorers that need one "
                        "(the judge then compares with the reference where there is one)")
    parser.add_argument("--route", metavar="NAME", help="only the decisions of this route")
    parser.add_argument("--sample", type=at_least(1), metavar="N",
                        help="label at most N answers, a random sample (--seed) of the unlabelled ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample's draw (default 0)")
    parser.add_argument("--concurrency", "-c", type=at_least(1), default=4,
                        help="answers graded at once (default 4)")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help=f"environment variable holding the judge's API key (default {DEFAULT_KEY_ENV} for "
                        f"{DEFAULT_JUDGE_URL}, none for any other URL: a key is never sent where it was not named)")
    parser.add_argument("--max-retries", type=at_least(0), default=3,
                        help="retries of a judge call that failed to connect or got 408/429/5xx (default 3)")
    parser.add_argument("--temperature", type=float, default=0.0, help="the judge's sampling temperature (default 0)")
    parser.add_argument("--max-tokens", type=at_least(1), default=512,
                        help="most tokens the judge may write per verdict, explanation and rating (default 512)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crossroads.evaluate.labelling import judge_grader, label, load_references, scorer_grader
    from crossroads.grading.judge import LLMJudge
    from crossroads.store import open_store
    from crossroads.store.sql import parse_store_url

    kind, where = parse_store_url(args.store)
    if kind == "sqlite" and where != ":memory:" and not Path(where).is_file():
        raise CrossroadsError(f"no store at {Path(where).resolve()}: give the `store:` URL the server was run with")
    if args.judge is not None:
        grader_of = _judge(args)
        source = f"judge:{grader_of.model}"
    else:
        grader_of = _scorer(args.scorer)
        source = f"judge:{grader_of.model}" if isinstance(grader_of, LLMJudge) else f"scorer:{args.scorer.strip()}"
    references = load_references(args.references) if args.references else None
    needs_reference = bool(grader_of.needs_reference)
    if needs_reference and references is None:
        raise CrossroadsError(f"scorer {args.scorer!r} compares each answer with a reference answer, and a store "
                              'holds none: give --references FILE.jsonl (one {"prompt": ..., "reference": ...} '
                              "per line, prompts as stored), or use --judge or a scorer that needs no reference")
    grader = judge_grader(grader_of) if isinstance(grader_of, LLMJudge) else scorer_grader(grader_of)

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with open_store(args.store) as store, Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"labelling as {source}", total=None)
            result = label(store, grader, source=source, route=args.route, sample=args.sample, seed=args.seed,
                           concurrency=args.concurrency, references=references, needs_reference=needs_reference,
                           progress=lambda done, total: progress.update(task, completed=done, total=total))
    finally:
        if isinstance(grader_of, LLMJudge):
            grader_of.close()
    for decision_id, model, reason in result.failures:
        print(f"warning: decision {decision_id}{'' if model is None else f' (shadow answer of {model})'} "
              f"not labelled: {reason}", file=sys.stderr)
    if result.failed > len(result.failures):
        print(f"warning: {result.failed - len(result.failures)} more answers not labelled", file=sys.stderr)
    print(_summary(result))
    return 0


def _summary(result) -> str:
    counts = result.counts
    parts = [f"labelled {result.labelled:,} answers as {result.source}"]
    if result.mean_rating is not None:
        parts[0] += f" (mean rating {result.mean_rating:.2f}/10, mean quality {result.mean_quality:.3f})"
    elif result.mean_quality is not None:
        parts[0] += f" (mean quality {result.mean_quality:.3f})"
    if result.failed:
        parts.append(f"{result.failed:,} failed")
    if counts["labelled"]:
        parts.append(f"{counts['labelled']:,} labelled before, skipped")
    if result.raced:
        parts.append(f"{result.raced:,} labelled meanwhile by another run, skipped")
    if result.no_reference:
        parts.append(f"{result.no_reference:,} without a reference answer, skipped")
    if counts["no_text"]:
        parts.append(f"{counts['no_text']:,} answers stored without text (failed calls), skipped")
    lines = ["; ".join(parts)]
    if counts["no_prompt"]:
        lines.append(f"{counts['no_prompt']:,} of {counts['decisions']:,} decisions have no stored prompt: start "
                     "serve with store_prompts: true to label them")
    return "\n".join(lines)


def _judge(args: argparse.Namespace):
    from crossroads.grading.judge import LLMJudge

    model, _, base_url = args.judge.partition("@")
    model, base_url = model.strip(), base_url.strip() or DEFAULT_JUDGE_URL
    if not model:
        raise CrossroadsError(f"--judge {args.judge!r} names no model: write MODEL or MODEL@BASE_URL")
    if not base_url.startswith(("http://", "https://")):
        raise CrossroadsError(f"--judge {args.judge!r}: {base_url!r} is not an http(s) base URL "
                              "(e.g. qwen2.5-7b-instruct@http://127.0.0.1:8000/v1)")
    key_env = args.api_key_env or (DEFAULT_KEY_ENV if base_url == DEFAULT_JUDGE_URL else None)
    return LLMJudge(base_url, model, api_key_env=key_env, temperature=args.temperature,
                    max_tokens=args.max_tokens, max_retries=args.max_retries)


def _scorer(spec: str):
    from crossroads.grading.scorers import make_scorer

    return make_scorer(spec)
