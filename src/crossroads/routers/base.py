"""The offline router interface, in scikit-learn's shape.

A router learns from recorded outcomes and, for each query embedding, predicts the
quality every model of its pool would reach.  Hyper-parameters are keyword arguments
of ``__init__`` stored verbatim; learned state lives in attributes ending with ``_``
and is saved as plain arrays (``.npz``, no pickle) plus a JSON header.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError, UnknownModelError

FORMAT_VERSION = 1
#: Batches up to this many queries run their matrix products on one BLAS thread: for a
#: single prompt the extra threads buy nothing, and as they spin after each product they
#: slow the embedding of the next prompt (measured in benchmarks/performance.py).
SMALL_BATCH = 32


@lru_cache(maxsize=1)
def _blas_threads():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _threads_for(n_queries: int):
    """One BLAS thread for small batches (see SMALL_BATCH), the library's default otherwise."""
    if n_queries > SMALL_BATCH:
        return nullcontext()
    return _blas_threads().limit(limits=1, user_api="blas")


class Router(ABC):
    """Predicts per-model quality from query embeddings.

    Subclasses implement ``_fit``, ``_predict``, ``_state`` and ``_restore``.  Routers
    that model pairwise preferences (Bradley-Terry style) also override
    ``_pair_logit`` so that ``win_probability`` is their own P(strong beats weak).
    """

    name: ClassVar[str]
    #: True for routers that read the prompt text as well as its embedding.
    reads_text: ClassVar[bool] = False
    #: True for routers that use each query's category (the task it belongs to) when given one.
    reads_category: ClassVar[bool] = False
    #: True for routers that can take models they were not trained on (``add_models``).
    open_pool: ClassVar[bool] = False

    models_: list[str]
    embedder_: str

    # -- public API -------------------------------------------------------------
    def fit(self, dataset: RoutingDataset, embeddings: np.ndarray, embedder: str = "") -> Router:
        """Learn from ``dataset``'s outcomes; ``embeddings[i]`` is query i's vector."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if len(embeddings) != dataset.n_queries:
            raise CrossroadsError(
                f"{len(embeddings)} embeddings for {dataset.n_queries} queries: embed every query of the dataset"
            )
        if dataset.n_queries == 0 or dataset.n_models == 0:
            raise CrossroadsError("cannot fit a router on an empty dataset (no queries or no models)")
        self.models_ = dataset.model_names
        self.embedder_ = embedder
        self._fit(dataset, embeddings)
        return self

    def predict(self, embeddings: np.ndarray, prompts: Sequence[str] | None = None,
                categories: Sequence[str | None] | None = None) -> np.ndarray:
        """Predicted quality in [0, 1], shape ``(n_queries, n_models)``, columns in ``models_`` order.

        ``prompts`` (the texts behind the embeddings) are needed by routers with ``reads_text``.
        ``categories`` (each query's task, None where unknown) are used by routers with
        ``reads_category`` and ignored by the others.
        """
        self._check_fitted()
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        self._check_inputs(embeddings, prompts, categories)
        with _threads_for(len(embeddings)):
            return np.clip(self._predict(embeddings, prompts, categories), 0.0, 1.0)

    def win_probability(
        self, embeddings: np.ndarray, strong: str, weak: str, prompts: Sequence[str] | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """P(``strong``'s answer beats ``weak``'s) per query, shape ``(n_queries,)``."""
        self._check_fitted()
        a, b = self.model_column(strong), self.model_column(weak)
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        with _threads_for(len(embeddings)):
            logit = self._pair_logit(embeddings, a, b)
            if logit is not None:
                return 1.0 / (1.0 + np.exp(-logit))
            self._check_inputs(embeddings, prompts, categories)
            quality = self._predict(embeddings, prompts, categories)  # unclipped, so that clipping does not create ties
        return np.clip(0.5 + 0.5 * (quality[:, a] - quality[:, b]), 0.0, 1.0)

    def model_column(self, name: str) -> int:
        self._check_fitted()
        try:
            return self.models_.index(name)
        except ValueError:
            raise UnknownModelError(name, self.models_) from None

    def add_models(self, models: Sequence, probes: RoutingDataset | None = None,
                   probe_embeddings: np.ndarray | None = None) -> Router:
        """Extend the pool with models not trained on (routers with ``open_pool`` only)."""
        raise CrossroadsError(
            f"the {self.name} router predicts only for the models it was trained on ({', '.join(self.models_)}); "
            "the irt router places new models by their descriptors"
        )

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes they were stored in."""
        signature = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in signature.parameters if p != "self"}

    def save(self, path: str | Path) -> Path:
        """Write the fitted router to ``path`` (``.npz``: arrays plus a JSON header)."""
        self._check_fitted()
        path = Path(path)
        header = {
            "format_version": FORMAT_VERSION,
            "router": self.name,
            "params": self.get_params(),
            "models": self.models_,
            "embedder": self.embedder_,
        }
        arrays = self._state()
        with path.open("wb") as handle:
            np.savez_compressed(handle, __header__=np.array(json.dumps(header)), **arrays)
        return path

    # -- hooks ------------------------------------------------------------------
    @abstractmethod
    def _fit(self, dataset: RoutingDataset, embeddings: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, embeddings: np.ndarray, prompts=None, categories=None) -> np.ndarray:
        """Unclipped predicted quality; ``categories`` is None or one category (or None) per query."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    def _pair_logit(self, embeddings: np.ndarray, a: int, b: int) -> np.ndarray | None:
        """log-odds that model a beats model b, or None to derive it from predicted quality."""
        return None

    def _check_inputs(self, embeddings: np.ndarray, prompts: Sequence[str] | None,
                      categories: Sequence[str | None] | None) -> None:
        if self.reads_text and prompts is None:
            raise CrossroadsError(f"the {self.name} router reads the prompt text: pass prompts= as well as embeddings")
        if prompts is not None and len(prompts) != len(embeddings):
            raise CrossroadsError(f"{len(prompts)} prompts for {len(embeddings)} embeddings: pass one prompt per embedding")
        if categories is not None and len(categories) != len(embeddings):
            raise CrossroadsError(f"{len(categories)} categories for {len(embeddings)} embeddings: pass one category "
                                  "(or None) per embedding")

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise CrossroadsError(f"the {self.name} router is not fitted: call fit() or load a saved router")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def read_router_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and arrays of a saved router, with a clear error for a wrong or corrupt file."""
    path = Path(path)
    train = (f"train one with `crossroads train --router NAME --out {path.stem}.npz`, or name `default` for the "
             "pretrained default router")
    if not path.is_file():
        what = "is a directory, not a router file" if path.is_dir() else "no such router file"
        raise CrossroadsError(f"{path}: {what}; {train}")
    try:
        with open(path, "rb") as file:
            magic = file.read(4)
    except OSError as exc:
        raise CrossroadsError(f"{path}: cannot read the router file ({exc.strerror or exc}); check its permissions") from None
    if magic != b"PK\x03\x04":  # Router.save writes an .npz, a zip archive; anything else is some other file
        raise CrossroadsError(f"{path}: not a crossroads router file or corrupt (not the .npz archive "
                              f"`crossroads train --out` writes); {train}")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__header__"]))
            arrays = {key: data[key] for key in data.files if key != "__header__"}
    except Exception as exc:  # zip, json or key errors all mean the same to the user
        reason = "it holds pickled objects" if "pickle" in str(exc) else str(exc)
        raise CrossroadsError(f"{path}: not a crossroads router file or corrupt ({reason}); {train}") from None
    if not isinstance(header, dict) or "router" not in header:
        raise CrossroadsError(f"{path}: an .npz archive, but not a crossroads router file (no router header); {train}")
    if header.get("format_version") != FORMAT_VERSION:
        raise CrossroadsError(
            f"{path}: router file format {header.get('format_version')!r}, this crossroads reads {FORMAT_VERSION}"
        )
    return header, arrays
