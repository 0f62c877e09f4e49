"""Synthetic routing data whose right answer is known, shared by the router tests."""

from __future__ import annotations

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset


def two_topic_dataset(n: int = 400, n_models: int = 2, dim: int = 32, seed: int = 0, missing: float = 0.0):
    """Queries on topic X (model 0 always wins) and topic Y (model 1 always wins).

    Models beyond the first two always score 0.  Returns the dataset, its embeddings
    and the topic of each query (0 = X, 1 = Y).  ``missing`` hides that share of the
    extra models' outcomes.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, dim))
    topic = rng.integers(0, 2, n)
    embeddings = centres[topic] + 0.3 * rng.normal(size=(n, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    quality = np.zeros((n, n_models))
    quality[topic == 0, 0] = 1.0
    quality[topic == 1, 1] = 1.0
    if missing and n_models > 2:
        hide = rng.random((n, n_models - 2)) < missing
        quality[:, 2:][hide] = np.nan
    models = [ModelInfo(f"model-{j}", 1.0 + j, 2.0 + j) for j in range(n_models)]
    dataset = RoutingDataset(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"{('a chemistry question', 'a poetry question')[t]} number {i}" for i, t in enumerate(topic)],
        categories=["x" if t == 0 else "y" for t in topic],
        sources=["synthetic"] * n,
        models=models,
        quality=quality,
        cost_usd=np.tile(np.arange(1, n_models + 1, dtype=float) * 1e-3, (n, 1)),
    )
    return dataset, embeddings.astype(np.float32), topic


def make_dataset(quality: np.ndarray) -> RoutingDataset:
    n, m = quality.shape
    ids = [f"q{i}" for i in range(n)]
    models = [ModelInfo(name) for name in "ABCDEFGH"[:m]]
    return RoutingDataset(ids, ids, ["c"] * n, ["s"] * n, models, quality, np.ones((n, m)))


def two_topics(n: int, n_models: int, seed: int = 0, dim: int = 16):
    """Unit embeddings around two orthogonal centres X and Y; A wins on X, B on Y, C is always worst."""
    rng = np.random.default_rng(seed)
    topic = rng.permutation(np.arange(n) % 2)
    centres = np.eye(dim)[:2]
    emb = centres[topic] + 0.05 * rng.standard_normal((n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    quality = rng.uniform(0.1, 0.9, (n, n_models))
    quality[:, 0] = np.where(topic == 0, 1.0, 0.3)
    quality[:, 1] = np.where(topic == 0, 0.3, 1.0)
    if n_models > 2:
        quality[:, 2] = 0.0
    return make_dataset(quality), emb.astype(np.float32), topic


class TopicEmbedder:
    """The centre of the prompt's topic (X for a "chemistry" prompt, Y otherwise), as ``two_topics`` draws them."""

    name = "test-embedder"

    def embed(self, texts):
        return np.stack([np.eye(16, dtype=np.float32)[0 if "chemistry" in t else 1] for t in texts])


def topic_router_file(folder) -> str:
    """A knn router fitted on ``two_topics`` (A wins on chemistry, B on the rest, C never), saved in ``folder``."""
    from crossroads.routers import make_router

    dataset, embeddings, _ = two_topics(200, 3)
    return str(make_router("knn", k=5).fit(dataset, embeddings, embedder=TopicEmbedder.name).save(folder / "knn.npz"))
