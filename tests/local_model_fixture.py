"""A real local model for tests: gemma-3-270m served by llama.cpp, started once per session.

Import the fixture into a test module: ``from local_model_fixture import local_model``.
"""

from __future__ import annotations

import pytest

from crossroads.upstream.local_model import LocalModelNotInstalled, LocalModelServer


@pytest.fixture(scope="session")
def local_model(tmp_path_factory):
    """A started ``LocalModelServer``; skipped, with the install hint, without the ``local`` extra.

    Other failures (wrong weights, a server that does not start) fail the tests.
    """
    try:
        server = LocalModelServer().start()
    except LocalModelNotInstalled as error:
        pytest.skip(str(error))
    try:
        yield server
    finally:
        server.stop()
        # The weights (240 MB) were joined into the session's private cache (see conftest.py).
        for joined in tmp_path_factory.getbasetemp().glob("*/models/gemma-3-270m-*.gguf"):
            joined.unlink()
