"""Model descriptors: the catalogue knows every model of the shared data, and users describe the rest."""

from __future__ import annotations

import numpy as np
import pytest

from crossroads.data.dataset import ModelInfo
from crossroads.data.descriptors import catalog, describe, feature_matrix, parse_pool
from crossroads.data.pricing import PRICE_TABLE
from crossroads.errors import CrossroadsError
from crossroads.objective.cost import ExpectedCost

ROUTERBENCH = ["gpt-4-1106-preview", "gpt-3.5-turbo-1106", "claude-v1", "claude-v2", "claude-instant-v1",
               "meta/llama-2-70b-chat", "mistralai/mixtral-8x7b-chat", "mistralai/mistral-7b-chat",
               "zero-one-ai/Yi-34B-Chat", "WizardLM/WizardLM-13B-V1.2", "meta/code-llama-instruct-34b-chat"]
LLMROUTER = ["qwen2.5-7b-instruct", "codegemma-7b", "gemma-2-9b-it", "llama-3.1-8b-instruct", "llama3-chatqa-1.5-8b",
             "mistral-7b-instruct-v0.3", "llama-3.3-nemotron-super-49b-v1", "llama-3.1-nemotron-51b-instruct",
             "llama3-chatqa-1.5-70b", "llama3-70b-instruct", "mixtral-8x7b-instruct-v0.1",
             "mixtral-8x22b-instruct-v0.1", "palmyra-creative-122b", "mistral-nemo-12b-instruct"]


@pytest.mark.parametrize("name", sorted(set(PRICE_TABLE) | set(ROUTERBENCH) | set(LLMROUTER)))
def test_every_model_of_the_shared_data_is_in_the_catalogue(name):
    descriptor = describe(name)
    assert descriptor.canonical, f"{name} is not in model_catalog.json"
    assert descriptor.tier in ("small", "medium", "large", "frontier")


def test_one_model_under_several_names_has_one_key():
    names = ["mistralai/mixtral-8x7b-chat", "Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b-instruct-v0.1",
             "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert len({describe(name).key for name in names}) == 1
    assert describe("Meta-Llama-3-70B").key != describe("llama3-70b-instruct").key  # base and instruct differ


def test_catalogue_keys_are_unique_and_tiers_order_by_price():
    by_key = {d.key: d for d in catalog().values()}
    price = {tier: np.median([d.blended_price for d in by_key.values() if d.tier == tier and d.blended_price])
             for tier in ("small", "large", "frontier")}
    assert price["small"] < price["large"] < price["frontier"]


def test_dataset_prices_override_the_catalogue_and_unknown_names_keep_their_size():
    assert describe(ModelInfo("gpt-4o", 1.0, 2.0)).blended_price == 1.5
    house = describe(ModelInfo("acme-13b-chat"))
    assert house.params_billion == 13 and house.resolved_tier == "medium"


def test_a_pool_mixes_catalogue_names_and_described_models():
    pool = parse_pool("gpt-4o; mine:price=0.1/0.3,tier=small ;gpt-4o-mini:price=0.2")
    assert [d.name for d in pool] == ["gpt-4o", "mine", "gpt-4o-mini"]
    assert pool[0].tier == "frontier" and pool[1].blended_price == pytest.approx(0.2)
    assert pool[2].price_per_mtok_in == pool[2].price_per_mtok_out == 0.2 and pool[2].tier == describe("gpt-4o-mini").tier


@pytest.mark.parametrize("text, message", [
    ("mystery-model;gpt-4o", "mystery-model.*price=IN/OUT,tier="),
    ("x:tier=huge", "tier 'huge' is not one of"),
    ("x:price=cheap", "price='cheap' is not valid"),
    ("x:colour=red", "unknown field 'colour'"),
    ("x:tier", "is not key=value"),
    ("gpt-4o;gpt-4o", "names a model twice"),
    (" ; ", "the pool is empty"),
])
def test_bad_pools_say_what_is_wrong(text, message):
    with pytest.raises(CrossroadsError, match=message):
        parse_pool(text)


def test_missing_values_are_filled_from_the_tier():
    rows = feature_matrix(parse_pool("a:tier=small;b:tier=frontier"), ["price", "size", "scores"])
    assert rows[0, 0] < rows[1, 0] and rows[0, 1] < rows[1, 1] and rows[0, 2] < rows[1, 2]


def test_cost_from_list_prices_counts_the_prompt_and_a_typical_answer():
    cost = ExpectedCost.from_prices(parse_pool("a:price=1/2;b:price=10/30"), output_tokens=100).predict([1000])
    np.testing.assert_allclose(cost, [[(1000 * 1 + 100 * 2) / 1e6, (1000 * 10 + 100 * 30) / 1e6]])
