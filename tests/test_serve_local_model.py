"""End to end with real models: the openai SDK -> crossroads serve -> llama.cpp serving gemma-3-270m (and SmolLM2)."""

from __future__ import annotations

import os
import subprocess
import time

import openai
from serve_helpers import ServerProcess, ServerThread

from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.upstream.local_model import STOP_STRINGS

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def gemma_config(local_model, store: str) -> dict:
    return {"models": [{"name": "gemma", "base_url": local_model.base_url, "upstream_model": local_model.model,
                        "price_per_mtok_in": 0.01, "price_per_mtok_out": 0.02, "timeout_s": 120,
                        "defaults": {"max_tokens": 16, "stop": list(STOP_STRINGS), "temperature": 0}}],
            "routes": {"auto": {"learner": "thompson"}}, "default_route": "auto", "store": store}


def test_real_model_answers_through_crossroads_streaming_and_not(local_model, tmp_path):
    gateway = Gateway(parse_config(gemma_config(local_model, f"sqlite:///{tmp_path}/store.db")))
    with ServerThread(gateway) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="auto", messages=FRANCE)
        assert answer.model == "gemma" and "Paris" in answer.choices[0].message.content
        assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
        assert answer.crossroads["cost_usd"] == (answer.usage.prompt_tokens * 0.01
                                                 + answer.usage.completion_tokens * 0.02) / 1e6
        chunks = list(client.chat.completions.create(model="auto", messages=FRANCE, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "Paris" in text and len(chunks) >= 3 and {c.model for c in chunks} == {"gemma"}
        receipt = client.post("/feedback", cast_to=object,
                              body={"decision_id": answer.crossroads["decision_id"], "quality": 1.0})
        assert receipt["applied"] == 1
        outcome = gateway.store.decision(chunks[0].crossroads["decision_id"])["outcome"]
        assert outcome["status"] == "ok" and 0 < outcome["ttft_s"] < outcome["latency_s"]


#: Prompts on which the pretrained default router's expectations for the two local models differ in sign.
PROMPTS = ["What is the capital of France?", "Prove that there are infinitely many primes.", "Write a haiku about rain.",
           "hi", "Explain how a transformer neural network computes attention, with the formula."]


def test_crossroads_serve_with_no_config_routes_between_two_local_models(tmp_path):
    """The embedded default: no config file, no API key; `crossroads serve` starts gemma-3-270m and SmolLM2-135M
    itself, and its route `auto` sends different prompts to different models."""
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    server = ServerProcess({}, tmp_path, env=env)
    server.command = ["serve", "--store", f"sqlite:///{tmp_path}/default.db"]
    with server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == ["auto", "gemma-3-270m", "smollm2-135m"]
        chosen = [client.post("/route", cast_to=object, body={"prompt": prompt})["model"] for prompt in PROMPTS]
        assert set(chosen) == {"gemma-3-270m", "smollm2-135m"}, chosen
        for model in ("gemma-3-270m", "smollm2-135m"):
            answer = client.chat.completions.create(model=model, messages=FRANCE, temperature=0)
            text = answer.choices[0].message.content
            assert answer.model == model and text.strip() and not text.startswith(" ")
            assert model != "gemma-3-270m" or "Paris" in text  # (SmolLM2-135M does not know it)
        children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2  # the two llama.cpp servers
        banner = server.log_path.read_text()
        assert "gemma-3-270m: run here by llama.cpp" in banner and "smollm2-135m: run here by llama.cpp" in banner
    # `crossroads serve` got SIGTERM: it must have stopped its llama.cpp servers before exiting
    for child in children:
        assert wait_until(lambda child=child: not os.path.exists(f"/proc/{child}")
                          or "zombie" in open(f"/proc/{child}/status").read().lower(), timeout_s=10)


def wait_until(condition, timeout_s: float) -> bool:
    """Whether ``condition()`` came true within ``timeout_s`` (polled)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
