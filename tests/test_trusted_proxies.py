"""Which address a request comes from (issue 14): X-Forwarded-For counts only from `security.trusted_proxies`.

Rate limits and wrong-key throttling go by address when there is no key to go by; a client
that could name its own address in a header would get a fresh bucket per request.  The real
`crossroads serve` process (uvicorn's proxy handling is set up there), on loopback.
"""

from __future__ import annotations

import httpx
import pytest
from serve_helpers import ServerProcess

from crossroads.serve.config import parse_config
from crossroads.upstream.fake import FAKE_BASE_URL

KEY_ENV = "CROSSROADS_PROXY_TEST_KEYS"


def wrong_key(server: ServerProcess, forwarded_for: str) -> int:
    return httpx.get(server.url + "/v1/models", timeout=10,
                     headers={"authorization": "Bearer wrong", "x-forwarded-for": forwarded_for}).status_code


@pytest.mark.parametrize(("trusted", "second_address_status"), [([], 429), (["127.0.0.0/8"], 401)])
def test_forwarded_addresses_count_only_from_trusted_proxies(tmp_path, monkeypatch, trusted, second_address_status):
    monkeypatch.setenv(KEY_ENV, "right-key")
    raw = {"models": [{"name": "m", "base_url": FAKE_BASE_URL}], "store": f"sqlite:///{tmp_path}/store.db",
           "security": {"api_keys_env": KEY_ENV, "max_auth_failures": 3, "trusted_proxies": trusted}}
    with ServerProcess(raw, tmp_path) as server:
        first = [wrong_key(server, "203.0.113.7") for _ in range(4)]
        assert first == [401, 401, 401, 429]  # three wrong keys, then the address is throttled
        # another address behind the proxy: its own bucket only when the proxy is trusted
        assert wrong_key(server, "198.51.100.9") == second_address_status


@pytest.mark.parametrize("bad", ["10.0.0.300", "not-an-address", 5, {"a": 1}])
def test_a_bad_trusted_proxy_is_a_clear_config_error(bad):
    raw = {"models": [{"name": "m", "base_url": FAKE_BASE_URL}], "security": {"trusted_proxies": [bad]}}
    with pytest.raises(Exception, match="trusted_proxies"):
        parse_config(raw)
