"""Shared test settings: a private embedding cache and the location of the real shared data."""

from __future__ import annotations

import os

import pytest
from local_model_fixture import local_model  # noqa: F401 (a session fixture: gemma-3-270m on llama.cpp)
from postgres_server import PostgresServer, fresh_database

from crossroads.paths import shared_data_dir
from crossroads.store import open_store


@pytest.fixture(autouse=True, scope="session")
def _private_embedding_cache(tmp_path_factory):
    """Tests never read or write the user's cache; they share one fresh cache among themselves."""
    os.environ["CROSSROADS_CACHE"] = str(tmp_path_factory.mktemp("crossroads-cache"))


@pytest.fixture
def real_data():
    """The shared data directory, or a skip that says where it was looked for."""
    root = shared_data_dir()
    if not (root / "routellm").is_dir():
        pytest.skip(f"real shared data not found at {root.resolve()}; set CROSSROADS_DATA to its location")
    return root


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server started for this test session; skips when PostgreSQL is not installed."""
    reason = PostgresServer.available()
    if reason is not None:
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A new, empty store location: a SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url):
    """An open store at ``store_url``, closed after the test."""
    with open_store(store_url) as opened:
        yield opened
