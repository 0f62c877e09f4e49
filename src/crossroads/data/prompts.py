r"""Find the question itself inside a benchmark prompt.

Benchmark prompts often carry worked examples (few-shot), an instruction header
and an answer cue around the question a model must answer.  A router should look
at the question: :func:`extract_question` removes the rest.  It recognises
examples as blocks, separated by blank lines (or by ``Question:``/``Q:`` lines),
that hold an answer cue followed by an answer (``Answer: B``, ``Answer:\nB``,
``答案：C``, and ``A: ...`` in prompts with ``Q:`` lines).

>>> extract_question("Q: 1 + 1?\nA: 2\n\nQ: What is 2 + 2?\nA:")
'What is 2 + 2?'
"""

from __future__ import annotations

import re

# An answer cue: "Answer:" (or "答案：") at a line start or after a sentence's end;
# "A:" only at a line start and only in prompts that also have "Q:" lines.
_CUE = r"(?:(?:^[ \t]*|(?<=[.?!)\]] ))answer\s*[:：]|答案\s*[:：])"
_QA_CUE = r"(?:" + _CUE + r"|^A\s*[:：])"
_HAS_Q_LINES = re.compile(r"^Q\s*[:：]", re.MULTILINE)
_FLAGS = re.IGNORECASE | re.MULTILINE
# Keyed by "the prompt has Q: lines": an answered cue (an example's end) and a trailing cue.
_ANSWERED = {qa: re.compile((_QA_CUE if qa else _CUE) + r"[ \t]*\n?[ \t]*\S", _FLAGS) for qa in (False, True)}
_TRAILING = {qa: re.compile(r"\s*" + (_QA_CUE if qa else _CUE) + r"\s*\Z", _FLAGS) for qa in (False, True)}
_LABELLED_QUESTION = re.compile(r"^(?:question|q)\s*[:：]", _FLAGS)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")

# Template lines that are instructions to the model, not part of the question.
_HEADER_LINES = re.compile(
    r"""\A\s*(?:
        the\ following\ (?:are|is)\ (?:an?\ )?(?:multiple[ -]choice\ )?questions?\b[^\n]*
      | please\ answer\ with\ the\ letter\ of\ the\ correct\ answer\.?
      | answer\ the\ following\ (?:multiple[ -]choice\ )?questions?\b[^\n]*
      | 以下是[^\n]*(?:单项选择题|选择题)[^\n]*
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_TRAILING_INSTRUCTION = re.compile(
    r"""\s*(?:
        print\ only\ a\ single\ choice\b[^\n]*?without\ explanation\.?
      | (?:please\ )?(?:respond|answer)\ with\ (?:only\ )?the\ letter\b[^\n]*
    )\s*\Z""",
    re.IGNORECASE | re.VERBOSE,
)
_QUESTION_LABEL = re.compile(r"\A\s*(?:question|q|问题)\s*[:：]\s*", re.IGNORECASE)


def extract_question(prompt: str) -> str:
    """The question a prompt asks, without few-shot examples, instruction header or answer cue.

    Options of a multiple-choice question stay (they are part of the question).
    Returns the stripped prompt when nothing recognisable surrounds the question.
    """
    text = prompt.strip()
    qa_style = _HAS_Q_LINES.search(text) is not None
    trailing_cue = _TRAILING[qa_style]
    body = _after_last_example(trailing_cue.sub("", text), _ANSWERED[qa_style])
    for _ in range(3):  # header, instruction, cue and label can stack in any order
        before = body
        body = _HEADER_LINES.sub("", body)
        body = _TRAILING_INSTRUCTION.sub("", body)
        body = trailing_cue.sub("", body)
        body = _QUESTION_LABEL.sub("", body)
        if body == before:
            break
    body = body.strip()
    return body or text


def split_prompt(prompt: str) -> tuple[str, str | None]:
    """``(question, full_prompt)``: full_prompt is the original prompt when it differs from the question."""
    question = extract_question(prompt)
    return question, (None if question == prompt else prompt)


def _after_last_example(body: str, answered_cue: re.Pattern) -> str:
    """Drop everything up to the end of the last answered example.

    An example's answer runs to the next blank line, or to the next line labelled
    ``Question:``/``Q:`` when examples follow each other without blank lines.
    """
    last_end = None
    for cue in answered_cue.finditer(body):
        ends = [end for end in (_BLANK_LINE.search(body, cue.end()), _LABELLED_QUESTION.search(body, cue.end())) if end]
        if ends:
            end = min(ends, key=lambda match: match.start())
            start = end.end() if end.re is _BLANK_LINE else end.start()
            if body[start:].strip():
                last_end = start
    return body if last_end is None else body[last_end:]
