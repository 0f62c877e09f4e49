"""A small neural classifier on embeddings: one hidden layer, one sigmoid output per model."""

from __future__ import annotations

import numpy as np

from crossroads.checks import check_count, check_fraction, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.routers.base import Router
from crossroads.routers.optim import Adam


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class MLPRouter(Router):
    """Predicts each model's quality with a one-hidden-layer network trained by masked cross-entropy.

    Quality in [0, 1] is the soft target of a sigmoid output per model; missing outcomes
    contribute no loss.  Trained with Adam on minibatches from a fixed seed, for ``epochs``
    passes or at least ``min_steps`` updates on small datasets.
    """

    name = "mlp"

    def __init__(self, hidden: int = 128, epochs: int = 10, lr: float = 2e-3, weight_decay: float = 1e-4,
                 dropout: float = 0.2, batch_size: int = 256, min_steps: int = 500, random_state: int = 0):
        check_count(hidden, "mlp hidden")
        check_count(epochs, "mlp epochs")
        check_positive(lr, "mlp lr")
        check_positive(weight_decay, "mlp weight_decay", allow_zero=True)
        check_fraction(dropout, "mlp dropout", high_open=True)
        check_count(batch_size, "mlp batch_size")
        check_count(min_steps, "mlp min_steps", minimum=0)
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_size = batch_size
        self.min_steps = min_steps
        self.random_state = random_state

    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        n, d = embeddings.shape
        m = dataset.n_models
        observed = ~np.isnan(dataset.quality)
        target = np.where(observed, dataset.quality, 0.0).astype(np.float32)
        prior = np.clip(np.nan_to_num(np.nanmean(dataset.quality, axis=0), nan=0.5), 1e-3, 1 - 1e-3)
        params = {
            "w1": rng.normal(0.0, np.sqrt(2.0 / d), (d, self.hidden)).astype(np.float32),
            "b1": np.zeros(self.hidden, dtype=np.float32),
            "w2": (rng.normal(0.0, np.sqrt(1.0 / self.hidden), (self.hidden, m)) * 0.1).astype(np.float32),
            "b2": np.log(prior / (1 - prior)).astype(np.float32),
        }
        optimiser = Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        x_all = embeddings.astype(np.float32)
        batches_per_epoch = -(-n // self.batch_size)
        for _ in range(max(self.epochs, -(-self.min_steps // batches_per_epoch))):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                rows = order[start : start + self.batch_size]
                x, y, mask = x_all[rows], target[rows], observed[rows]
                pre = x @ params["w1"] + params["b1"]
                h = np.maximum(pre, 0.0)
                keep = (rng.random(h.shape, dtype=np.float32) >= self.dropout) / np.float32(1.0 - self.dropout) if self.dropout else 1.0
                h_drop = h * keep
                p = _sigmoid(h_drop @ params["w2"] + params["b2"])
                g_logit = (p - y) * mask / np.float32(max(mask.sum(), 1))
                g_h = (g_logit @ params["w2"].T) * keep * (pre > 0)
                optimiser.step({
                    "w2": h_drop.T @ g_logit,
                    "b2": g_logit.sum(axis=0),
                    "w1": x.T @ g_h,
                    "b1": g_h.sum(axis=0),
                })
        self.w1_, self.b1_, self.w2_, self.b2_ = (params[k] for k in ("w1", "b1", "w2", "b2"))

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        h = np.maximum(embeddings @ self.w1_ + self.b1_, 0.0)
        return _sigmoid(h @ self.w2_ + self.b2_)

    def _state(self) -> dict[str, np.ndarray]:
        return {"w1": self.w1_, "b1": self.b1_, "w2": self.w2_, "b2": self.b2_}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.w1_, self.b1_, self.w2_, self.b2_ = arrays["w1"], arrays["b1"], arrays["w2"], arrays["b2"]
