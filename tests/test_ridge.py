"""The ridge router reads the words of the prompt, not only its embedding."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import two_topic_dataset

from crossroads.errors import CrossroadsError
from crossroads.routers import make_router
from crossroads.routers.text_features import (
    SHAPE_FEATURES,
    STEP_WORDS,
    TfidfVocabulary,
    shape_features,
)


def test_learns_from_words_when_embeddings_say_nothing():
    dataset, _, topic = two_topic_dataset(n=300)
    noise = np.random.default_rng(5).normal(size=(300, 16)).astype(np.float32)
    router = make_router("ridge").fit(dataset.subset(np.arange(200)), noise[:200])
    predicted = router.predict(noise[200:], dataset.prompts[200:]).argmax(axis=1)
    assert np.mean(predicted == topic[200:]) > 0.95


def test_needs_prompts():
    dataset, embeddings, _ = two_topic_dataset(n=50)
    router = make_router("ridge").fit(dataset, embeddings)
    with pytest.raises(CrossroadsError, match="reads the prompt text"):
        router.predict(embeddings)


def test_tfidf_matches_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "mat mat mat cat"]
    ours = TfidfVocabulary.fit(texts, min_df=1).transform(texts).toarray()
    theirs = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts).transform(texts).toarray()
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_shape_features_count_numbers_and_steps():
    features = shape_features(["I have 3 apples and 4.5 pears, 3 of them cost $2 each; twice as many as 1000?", "no digits"])
    assert features.shape == (2, SHAPE_FEATURES)
    assert features[0, 2] == pytest.approx(0.5) and features[0, 3] == pytest.approx(0.4)  # 5 numbers, 4 distinct
    assert features[0, 6] == 1 and features[0, 8] == 1 and features[0, 10] == pytest.approx(1 / 3)
    assert features[0, 11 + STEP_WORDS.index("twice")] == 1 and features[0, 11 + STEP_WORDS.index("each")] == 1
    assert features[1, 2] == 0 and features[1, 11:].sum() == 0
