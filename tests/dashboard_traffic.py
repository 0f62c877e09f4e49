"""A server that has served replayed traffic, for the dashboard's tests: the twin of a recorded dataset upstream,
the real app in process on SQLite, two teams' virtual keys, and `crossroads replay` through each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serve_helpers import ServerThread
from test_twin_loop import recorded_dataset

from crossroads.evaluate.replay import replay
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.upstream.fake import FakeUpstream
from crossroads.upstream.recorded import Recording

ADMIN = "dashboard-admin-key"
ADMIN_ENV = "CROSSROADS_DASHBOARD_TEST_ADMIN"
#: Requests replayed per team: search through the learner route, support through the budgeted router route.
REQUESTS = {"search": 48, "support": 24}


@dataclass
class Served:
    url: str
    server: ServerThread
    secrets: dict[str, str]  # team -> its key's secret
    dataset: Any

    @property
    def store(self) -> Any:
        return self.server.gateway.store

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, headers={"authorization": f"Bearer {ADMIN}"},
                             timeout=60)


def serve_replayed_traffic(tmp: Path):
    """A context manager yielding :class:`Served`; everything stops at its end."""
    import contextlib

    @contextlib.contextmanager
    def run():
        os.environ[ADMIN_ENV] = ADMIN
        dataset = recorded_dataset(60)
        recording = Recording(dataset)
        with FakeUpstream(recording=recording).serve() as twin:
            raw = recording.serve_config(twin.base_url)
            raw["routes"]["bandit"]["explore"] = 0.2
            raw["routes"]["priced"] = {"router_file": "default", "budget": {"usd": 0.05, "per": "day", "mode": "pace"}}
            raw.update(store=f"sqlite:///{tmp}/store.db", store_prompts=True, security={"admin_key_env": ADMIN_ENV})
            with ServerThread(Gateway(parse_config(raw))) as server:
                served = Served(server.url, server, {}, dataset)
                for team, budget in (("search", None), ("support", {"usd": 100, "per": "month"})):
                    assert served.admin("POST", "/admin/teams", {"name": team}).status_code == 201
                    body = {"name": f"{team}-app", "team": team, **({"budget": budget} if budget else {})}
                    created = served.admin("POST", "/admin/keys", body)
                    assert created.status_code == 201, created.text
                    served.secrets[team] = created.json()["secret"]
                for team, route in (("search", "bandit"), ("support", "priced")):
                    result = replay(recording, server.url + "/v1", route, requests=REQUESTS[team], concurrency=4,
                                    seed=len(team), api_key=served.secrets[team])
                    assert result.summary()["answered"] == REQUESTS[team], result.summary()
                yield served

    return run()
