"""How the example exchange in gemma-3-270m's chat template leaks into its answers.

gemma-3-270m is a base model: it answers a chat only inside a transcript opened by an
example exchange, and a tiny model copies that example.  This replays nine short
questions, eight seeds each at temperature 0.7, through the shipped ``CHAT_TEMPLATE`` and
through the template with the example it replaced, and counts the answers that use the
example's words.  Needs the ``local`` extra (llama.cpp).  Run from the repository root::

    python benchmarks/local_model_prompting.py

Writes ``benchmarks/results/local_model_prompting.json`` and ``.md``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _shared import Table, machine, write_results

from crossroads.upstream.local_model import CHAT_TEMPLATE, STOP_STRINGS, LocalModelServer

SHIPPED = "User: Hello!\nAssistant: Hello! How can I help?\nUser: What is the capital of Italy?\nAssistant: Rome.\n"
REPLACED = "User: At what temperature does water boil at sea level?\nAssistant: Water boils at 100 °C (212 °F) at sea level.\n"
#: Each example and the words that betray it in an answer.
EXAMPLES = {"shipped (greeting, capital of Italy)": (SHIPPED, r"\brome\b|italy|how can i help"),
            "replaced (water boiling at sea level)": (REPLACED, r"water|boil|sea level|°|212|temperature")}
QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "What is 2 + 2?", "What is 17 x 23?",
             "Name a fruit that is yellow.", "What is the largest planet?", "Translate 'thank you' into French.",
             "Write a haiku about rain.", "Explain photosynthesis in one sentence."]
SEEDS = 8


def answers(template: str) -> dict[str, list[str]]:
    """Each question's answers, one per seed, at temperature 0.7 (and the greedy one first)."""
    out: dict[str, list[str]] = {}
    with LocalModelServer(chat_template=template) as server, httpx.Client(timeout=120) as client:
        for question in QUESTIONS:
            out[question] = []
            for seed in range(-1, SEEDS):
                body = {"model": server.model, "messages": [{"role": "user", "content": question}],
                        "max_tokens": 48, "temperature": 0.0 if seed < 0 else 0.7, "seed": max(seed, 0),
                        "stop": list(STOP_STRINGS)}
                reply = client.post(f"{server.base_url}/chat/completions", json=body).json()
                out[question].append(reply["choices"][0]["message"]["content"])
    return out


def main() -> int:
    if SHIPPED not in CHAT_TEMPLATE:
        print("CHAT_TEMPLATE no longer holds the example this script measures: update SHIPPED")
        return 1
    results = {"machine": machine(), "seeds": SEEDS, "questions": QUESTIONS, "examples": {}}
    table = Table("Answers that use the example exchange's words (temperature 0.7)",
                  ["example exchange", "leaking answers", "greedy answer to 'What is 17 x 23?'"])
    for name, (example, words) in EXAMPLES.items():
        replies = answers(CHAT_TEMPLATE.replace(SHIPPED, example))
        sampled = [(q, text) for q, texts in replies.items() for text in texts[1:]]
        leaks = [text for q, text in sampled if re.search(words, text, re.I) and not re.search(words, q, re.I)]
        results["examples"][name] = {"leaks": len(leaks), "answers": len(sampled), "leaking": leaks,
                                     "greedy": {q: texts[0] for q, texts in replies.items()}}
        table.add(name, f"{len(leaks)} / {len(sampled)}", repr(replies["What is 17 x 23?"][0]))
    table.print()
    paths = write_results("local_model_prompting", results, "gemma-3-270m's chat template",
                          ["`python benchmarks/local_model_prompting.py`"], [table])
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
