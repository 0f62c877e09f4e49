"""RouteLLM's matrix-factorisation (MF) router, for any number of models.

A model m and a query q score ``s(m, q) = w2 . (normalize(v_m) * (W1 e_q))``: W1
projects the query embedding to ``dim`` dimensions, v_m is a learned vector per model
(L2-normalised), w2 a linear read-out, all without biases; P(a beats b on q) =
sigmoid(s(a, q) - s(b, q)).  This is RouteLLM's ``MFModel`` and its training recipe
(``matrix_factorization/train_matrix_factorization.py``): logistic loss on battles,
Adam with coupled weight decay, Gaussian noise of standard deviation ``noise_alpha``
added to every training embedding, and the same initialisation and defaults (dim 128,
lr 3e-4, weight decay 1e-5, batch 64, 100 epochs).

Two changes make it practical in numpy and for any pool.  A minibatch holds
``batch_size`` queries with all their battles (all pairs of models with recorded
outcomes), so a step scores every model on a query at once rather than one battle
at a time; with two models this is RouteLLM's batch.  Ties count half a win for each side
(``tie_weight=1``, the same as a soft target of 0.5); RouteLLM's MF dropped them,
which is ``tie_weight=0``.

Without biases the score is linear in the embedding, so a preference that holds on
every query can only ride on the mean direction of the embeddings (text embeddings
have one; centred embeddings do not).  ``model_bias=True`` adds a learned score per
model for that, which RouteLLM's model does not have.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router
from crossroads.routers.comparisons import (
    mean_quality_per_query,
    pair_outcomes,
    quality_from_win_probabilities,
    win_tensor,
)
from crossroads.routers.optim import Adam

# OpenBLAS hands a product to every core once it exceeds 2**18 multiply-adds.  The
# products of a training step are only a few times larger: threads save little on
# idle cores and, measured on 2 busy cores, made them 100x slower.  Row blocks keep
# each call single-threaded.
_THREAD_FREE_MACS = 2**18


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` computed in row blocks of at most ``_THREAD_FREE_MACS`` multiply-adds each."""
    rows = max(1, _THREAD_FREE_MACS // max(1, a.shape[1] * b.shape[1]))
    if rows >= len(a):
        return a @ b
    return np.concatenate([a[start : start + rows] @ b for start in range(0, len(a), rows)])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


class MatrixFactorizationRouter(Router):
    """Bilinear model x query scores trained on pairwise battles (RouteLLM's MF).

    ``predict`` gives quality_a = level + (1/m) sum_b (2 P(a beats b) - 1), where level
    is the mean recorded quality of the training set: qualities whose differences are
    the expected quality differences implied by the win probabilities (see
    ``comparisons.quality_from_win_probabilities``).

    ``batch_size`` counts queries, each with all its battles.  ``noise_alpha`` is the
    standard deviation of the Gaussian noise added to each coordinate of a training
    embedding.  ``verbose`` shows a progress bar over epochs: True always, False never,
    None when stderr is a terminal and training will take more than about two seconds.

    >>> from crossroads.data.dataset import ModelInfo, RoutingDataset
    >>> emb = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> data = RoutingDataset(list("wxyz"), list("wxyz"), ["c"] * 4, ["s"] * 4,
    ...                       [ModelInfo("a"), ModelInfo("b")], [[1, 0], [1, 0], [0, 1], [0, 1]], np.ones((4, 2)))
    >>> router = MatrixFactorizationRouter(dim=8, lr=0.05, noise_alpha=0.0, batch_size=4).fit(data, emb)
    >>> router.predict([[1.0, 0.05], [0.05, 1.0]]).argmax(axis=1)
    array([0, 1])
    """

    name = "mf"

    def __init__(self, dim: int = 128, num_epochs: int = 100, lr: float = 3e-4, weight_decay: float = 1e-5,
                 batch_size: int = 64, noise_alpha: float = 0.1, tie_weight: float = 1.0,
                 model_bias: bool = False, random_state: int = 42, verbose: bool | None = None):
        check_count(dim, "mf dim")
        check_count(num_epochs, "mf num_epochs")
        check_positive(lr, "mf lr")
        check_positive(weight_decay, "mf weight_decay", allow_zero=True)
        check_count(batch_size, "mf batch_size")
        check_positive(noise_alpha, "mf noise_alpha", allow_zero=True)
        check_positive(tie_weight, "mf tie_weight", allow_zero=True)
        self.dim = dim
        self.num_epochs = num_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.noise_alpha = noise_alpha
        self.tie_weight = tie_weight
        self.model_bias = model_bias
        self.random_state = random_state
        self.verbose = verbose

    # -- training -------------------------------------------------------------------
    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        m, d = dataset.n_models, embeddings.shape[1]
        levels = mean_quality_per_query(dataset.quality)
        if np.isnan(levels).all():
            raise CrossroadsError("the dataset records no outcome at all: nothing to learn the models from")
        self.level_ = np.array(np.nanmean(levels), dtype=np.float32)
        wins = win_tensor(pair_outcomes(dataset.quality), m, self.tie_weight)
        rows = np.flatnonzero(wins.sum(axis=(1, 2)) > 0)
        wins, x_all = wins[rows], np.asarray(embeddings, dtype=np.float32)[rows]
        # torch's defaults, as RouteLLM: Embedding ~ N(0, 1), Linear ~ U(+-1/sqrt(fan_in)).
        params = {
            "model_vectors": rng.standard_normal((m, self.dim), dtype=np.float32),
            "projection": rng.uniform(-1, 1, (self.dim, d)).astype(np.float32) / np.float32(np.sqrt(d)),
            "classifier": rng.uniform(-1, 1, self.dim).astype(np.float32) / np.float32(np.sqrt(self.dim)),
        }
        if self.model_bias:
            params["bias"] = np.zeros(m, dtype=np.float32)
        if len(rows):
            self._train(params, x_all, wins, rng)
        self.model_vectors_ = params["model_vectors"]
        self.projection_ = params["projection"]
        self.classifier_ = params["classifier"]
        self.bias_ = params.get("bias", np.zeros(m, dtype=np.float32))

    def _train(self, params: dict[str, np.ndarray], x_all: np.ndarray, wins: np.ndarray,
               rng: np.random.Generator) -> None:
        optimiser = Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        n = len(x_all)
        progress = None
        started = time.perf_counter()
        try:
            for epoch in range(self.num_epochs):
                order = rng.permutation(n)
                loss_sum = weight_sum = 0.0
                for start in range(0, n, self.batch_size):
                    rows = order[start : start + self.batch_size]
                    loss, weight, grads = self._loss_and_grads(params, x_all[rows], wins[rows], rng)
                    optimiser.step(grads)
                    loss_sum += loss
                    weight_sum += weight
                if progress is None and self._show_progress(time.perf_counter() - started, epoch + 1):
                    progress, task = self._progress_bar(epoch + 1)
                if progress is not None:
                    progress.update(task, advance=1, loss=loss_sum / weight_sum)
        finally:
            if progress is not None:
                progress.stop()

    def _loss_and_grads(self, params: dict[str, np.ndarray], x: np.ndarray, wins: np.ndarray,
                        rng: np.random.Generator) -> tuple[float, float, dict[str, np.ndarray]]:
        """Summed logistic loss of a minibatch, its total battle weight, and mean-loss gradients."""
        if self.noise_alpha:
            x = x + np.float32(self.noise_alpha) * rng.standard_normal(x.shape, dtype=np.float32)
        vectors, projection, classifier = params["model_vectors"], params["projection"], params["classifier"]
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        unit = vectors / norms
        readout = unit * classifier  # (m, dim)
        # s = x @ (readout @ projection).T: the same product as RouteLLM's, associated so
        # that the large matrix is multiplied by m rows rather than by the batch.
        direction = _matmul(readout, projection)  # (m, d)
        scores = _matmul(x, direction.T)  # (B, m)
        if "bias" in params:
            scores = scores + params["bias"]
        margin = scores[:, :, None] - scores[:, None, :]  # s_a - s_b
        weight = float(wins.sum())
        loss = float((wins * _softplus(-margin)).sum())
        # d loss / d margin[a, b] = -wins[a, b] * sigmoid(-margin[a, b])
        pull = wins * _sigmoid(-margin) / np.float32(weight)
        g_scores = pull.sum(axis=1) - pull.sum(axis=2)
        g_direction = _matmul(g_scores.T, x)
        g_readout = _matmul(g_direction, projection.T)
        g_unit = g_readout * classifier
        grads = {
            "projection": _matmul(readout.T, g_direction),
            "classifier": (g_readout * unit).sum(axis=0),
            "model_vectors": (g_unit - unit * (unit * g_unit).sum(axis=1, keepdims=True)) / norms,
        }
        if "bias" in params:
            grads["bias"] = g_scores.sum(axis=0)
        return loss, weight, grads

    def _show_progress(self, elapsed_s: float, epochs_done: int) -> bool:
        if self.verbose is not None:
            return bool(self.verbose)
        expected_s = elapsed_s / epochs_done * self.num_epochs
        return sys.stderr.isatty() and expected_s > 2.0 and epochs_done < self.num_epochs

    def _progress_bar(self, done: int):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("training mf router"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        task = progress.add_task("mf", total=self.num_epochs, completed=done - 1, loss=float("nan"))
        progress.start()
        return progress, task

    # -- prediction -----------------------------------------------------------------
    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Score of every model on every query, ``(n_queries, n_models)``: P(a beats b) = sigmoid(s_a - s_b)."""
        self._check_fitted()
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if embeddings.shape[1] != self.projection_.shape[1]:
            raise CrossroadsError(
                f"embeddings have {embeddings.shape[1]} dimensions, the router was trained on "
                f"{self.projection_.shape[1]} (embedder {self.embedder_ or 'unknown'}): embed with the same model"
            )
        unit = self.model_vectors_ / np.maximum(np.linalg.norm(self.model_vectors_, axis=1, keepdims=True), 1e-12)
        return embeddings @ ((unit * self.classifier_) @ self.projection_).T + self.bias_

    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        scores = self.scores(embeddings).astype(np.float64)
        win_prob = _sigmoid(scores[:, :, None] - scores[:, None, :])
        return quality_from_win_probabilities(win_prob, float(self.level_))

    def _pair_logit(self, embeddings: np.ndarray, a: int, b: int) -> np.ndarray:
        scores = self.scores(embeddings).astype(np.float64)
        return scores[:, a] - scores[:, b]

    def _state(self) -> dict[str, np.ndarray]:
        return {"model_vectors": self.model_vectors_, "projection": self.projection_,
                "classifier": self.classifier_, "bias": self.bias_, "level": self.level_}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.model_vectors_ = arrays["model_vectors"]
        self.projection_ = arrays["projection"]
        self.classifier_ = arrays["classifier"]
        self.bias_ = arrays["bias"]
        self.level_ = arrays["level"]
