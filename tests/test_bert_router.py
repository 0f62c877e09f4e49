"""The bert router: fine-tuning a real BERT (all-MiniLM-L6-v2) on CPU, and serving its ONNX export without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from topics import topics_dataset

from crossroads.data.dataset import ModelInfo
from crossroads.errors import CrossroadsError
from crossroads.routers import load_router, make_router

pytest.importorskip("torch", reason="the bert router trains with torch: pip install torch==2.13.0 'crossroads[bert]'")

NEW = ["What is 45 divided by 9?", "Write a poem about winter.", "Calculate 12 squared.", "Compose a haiku about snow."]


def two_models():
    return topics_dataset([ModelInfo("math-model", 1, 1), ModelInfo("poetry-model", 1, 1)])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    dataset = two_models()
    router = make_router("bert", epochs=6, batch_size=8, head_learning_rate=1e-2)
    router.fit(dataset, np.zeros((dataset.n_queries, 1)))
    return router, router.save(tmp_path_factory.mktemp("bert") / "bert.npz")


def test_fine_tuned_minilm_routes_new_prompts_by_topic(fitted):
    router, _ = fitted
    best = router.predict(np.zeros((len(NEW), 1)), NEW).argmax(axis=1)
    assert list(best) == [0, 1, 0, 1]
    assert router.examples_per_s_ > 0


def test_the_saved_router_predicts_without_torch(fitted):
    router, path = fitted
    expected = router.predict(np.zeros((len(NEW), 1)), NEW)
    script = (
        "import sys, json, numpy as np\n"
        "sys.modules['torch'] = sys.modules['transformers'] = None  # importing either now fails\n"
        "from crossroads.routers import load_router\n"
        f"router = load_router({str(path)!r})\n"
        f"print(json.dumps(router.predict(np.zeros((4, 1)), {NEW!r}).tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    np.testing.assert_allclose(np.array(json.loads(out)), expected, atol=1e-6)
    assert load_router(path).predict(np.zeros((4, 1)), NEW).shape == (4, 2)


def test_the_saved_file_holds_int8_weights(fitted):
    _, path = fitted
    assert path.stat().st_size < 30e6  # 22.7M parameters: about 91 MB as float32, a quarter of that as int8


def test_training_without_torch_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CrossroadsError, match=r"torch==2\.13\.0"):
        make_router("bert", base="tiny").fit(two_models(), np.zeros((16, 1)))


def test_a_base_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(CrossroadsError, match="no config.json"):
        make_router("bert", base=str(tmp_path)).fit(two_models(), np.zeros((16, 1)))
