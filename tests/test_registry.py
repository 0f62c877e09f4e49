"""One spec grammar and one registry: parsing, checking against the builder's signature, conversion, errors."""

from __future__ import annotations

import pytest

from crossroads.data.importers import FORMATS
from crossroads.embeddings import EMBEDDERS
from crossroads.errors import CrossroadsError
from crossroads.grading.scorers import SCORERS
from crossroads.objective.rules import RULES
from crossroads.online import LEARNERS
from crossroads.registry import Registry, Spec
from crossroads.routers import ROUTERS
from crossroads.upstream.providers import PROVIDERS

FAMILIES = [ROUTERS, LEARNERS, EMBEDDERS, SCORERS, FORMATS, PROVIDERS, RULES]


def build_thing(path: str, size: int = 3, ratio: float = 0.5, fast: bool = False, label: str | None = None,
                limit: int | None = None):
    return {"path": path, "size": size, "ratio": ratio, "fast": fast, "label": label, "limit": limit}


THINGS = Registry("thing", {"thing": "test_registry:build_thing"}, {"thing": "a thing for the tests"})


@pytest.mark.parametrize("text, name, params, positional", [
    ("knn", "knn", {}, None),
    ("knn:k=100", "knn", {"k": "100"}, None),
    (" knn : k = 100 , temperature=0.5 ", "knn", {"k": "100", "temperature": "0.5"}, None),
    ("routerbench:/data/a,b.csv", "routerbench", {}, "/data/a,b.csv"),
    ("llmrouter:x.json,output_tokens=300", "llmrouter", {"output_tokens": "300"}, "x.json"),
    ("openai:m,base_url=http://h:8080/v1?a=b", "openai", {"base_url": "http://h:8080/v1?a=b"}, "m"),
    ("ensemble:members=knn+ridge", "ensemble", {"members": "knn+ridge"}, None),
    ("pool:price=0.2/0.8,tier=small", "pool", {"price": "0.2/0.8", "tier": "small"}, None),
])
def test_the_grammar(text, name, params, positional):
    spec = Spec.parse(text)
    assert (spec.name, dict(spec.params), spec.positional) == (name, params, positional)


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    (":k=1", "has no name"),
    ("knn:k=1,k=2", "gives k twice"),
])
def test_grammar_errors_say_what_is_wrong(text, message):
    with pytest.raises(CrossroadsError, match=message):
        Spec.parse(text)


def test_text_values_become_the_types_the_builder_takes():
    made = THINGS.build("thing:data.csv,size=7,ratio=1,fast=yes,label=none,limit=none")
    assert made == {"path": "data.csv", "size": 7, "ratio": 1.0, "fast": True, "label": None, "limit": None}
    assert THINGS.build("thing:007,label=12")["path"] == "007" and THINGS.build("thing:p,label=12")["label"] == "12"
    assert THINGS.build("thing:p", size=9)["size"] == 9  # Python values join the spec's
    assert THINGS.spec("thing:p,size=4").label == "thing:path=p,size=4"


@pytest.mark.parametrize("text, message", [
    ("thing:p,size=abc", r"thing 'thing': size='abc' is not a whole number"),
    ("thing:p,size=2.5", "is not a whole number"),
    ("thing:p,ratio=half", "ratio='half' is not a number"),
    ("thing:p,fast=maybe", "fast='maybe' is not true or false"),
    ("thing:p,colour=red", r"has no option 'colour'; its options: path, size \(default 3\), ratio \(default 0.5\)"),
    ("thing:size=1", "needs path"),
    ("thing:p,path=q", "path is given twice"),
    ("thing:p,size=1,fast", "size='1,fast' is not a whole number"),  # a comma not followed by key= is the value's
    ("ting:p", "unknown thing 'ting'; choose one of: thing \\(a thing for the tests\\)"),
])
def test_mistakes_name_the_option_and_the_valid_ones(text, message):
    with pytest.raises(CrossroadsError, match=message):
        THINGS.build(text)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.family)
def test_every_family_lists_its_members_and_each_one_loads(family):
    with pytest.raises(CrossroadsError, match=f"unknown {family.family} 'no-such'; choose one of: {family.names[0]}"):
        family.load("no-such")
    for name in family.names:
        assert callable(family.load(name))


def test_python_values_pass_unconverted_so_builders_check_them():
    with pytest.raises(CrossroadsError, match="sticky"):
        LEARNERS.build("automaton", sticky="yes")  # from Python a string stays a string: the learner refuses it
    assert LEARNERS.build("automaton:sticky=yes").sticky is True  # from text it means true
