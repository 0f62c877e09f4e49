"""The admin endpoints of virtual keys and teams (all need the admin key; see docs/keys.md).

``POST /admin/teams`` declares a team (with an optional ``cap`` budget shared by its keys),
``GET /admin/teams`` lists them with their budgets and spend, ``GET|PATCH /admin/teams/{team}``
shows one or changes its budget; ``POST /admin/keys``
creates a key and returns its secret this once, ``GET /admin/keys[?team=T]`` lists keys
(never their secrets), ``GET|PATCH /admin/keys/{key_id}`` shows or changes one, and
``POST /admin/keys/{key_id}/revoke`` (or ``DELETE /admin/keys/{key_id}``) revokes it.
Bad settings are refused whole (400, naming the setting), before anything is written.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crossroads.serve.keys import KeyRing
from crossroads.store.keys import CHANGEABLE, KeySettingsError

#: What a create body may hold: the changeable settings, and ``expires_in_s`` (an expiry counted from now).
CREATE_FIELDS = (*CHANGEABLE, "expires_in_s")


class KeysAdmin:
    """The handlers; ``server`` is the app's ``Server`` (for its admin guard, body reader, config and key ring)."""

    def __init__(self, server: Any):
        self.server = server

    @property
    def ring(self) -> KeyRing:
        return self.server.keyring

    def endpoints(self) -> list[tuple[str, str, Any, list[str]]]:
        return [
            ("/admin/teams", "admin_teams", self.teams, ["GET", "POST"]),
            ("/admin/teams/{team}", "admin_team", self.team, ["GET", "PATCH"]),
            ("/admin/keys", "admin_keys", self.keys, ["GET", "POST"]),
            ("/admin/keys/{key_id}", "admin_key", self.key, ["GET", "PATCH", "DELETE"]),
            ("/admin/keys/{key_id}/revoke", "admin_key_revoke", self.revoke, ["POST"]),
        ]

    async def teams(self, request: Request) -> Response:
        await self.server.client(request, admin=True)
        if request.method == "GET":
            return JSONResponse({"teams": await anyio.to_thread.run_sync(self.ring.keys.teams)})
        body = await self._body(request, ("name", "budget"))
        team = await anyio.to_thread.run_sync(self.ring.keys.create_team, body.get("name"), body.get("budget"))
        return JSONResponse(team, status_code=201)

    async def team(self, request: Request) -> Response:
        await self.server.client(request, admin=True)
        name = request.path_params["team"]
        if request.method == "GET":
            return JSONResponse(await anyio.to_thread.run_sync(self.ring.keys.team, name))
        changes = await self._body(request, ("budget",))
        team = await anyio.to_thread.run_sync(self.ring.keys.update_team, name, changes)
        self.ring.forget()
        return JSONResponse(team)

    async def keys(self, request: Request) -> Response:
        await self.server.client(request, admin=True)
        if request.method == "GET":
            team = request.query_params.get("team")
            keys = await anyio.to_thread.run_sync(lambda: self.ring.keys.all(team))
            now = time.time()
            return JSONResponse({"keys": [key.to_dict(now) for key in keys]})
        body = await self._body(request, CREATE_FIELDS)
        settings = self._settings(body)
        if "expires_in_s" in settings:
            settings["expires_s"] = _expiry(settings.pop("expires_in_s"), settings.get("expires_s"))
        missing = [name for name in ("name", "team") if name not in settings]
        if missing:
            raise KeySettingsError(f"a new key needs a {' and a '.join(missing)}", missing[0])
        name, team = settings.pop("name"), settings.pop("team")
        key, secret = await anyio.to_thread.run_sync(lambda: self.ring.keys.create(name, team, **settings))
        self.ring.forget()
        return JSONResponse({"key": key.to_dict(), "secret": secret,
                             "note": "the secret is shown this once: the server keeps only its sha256 digest"},
                            status_code=201)

    async def key(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await self.revoke(request)
        await self.server.client(request, admin=True)
        key_id = request.path_params["key_id"]
        if request.method == "GET":
            return JSONResponse((await anyio.to_thread.run_sync(self.ring.keys.get, key_id)).to_dict())
        body = await self._body(request, CREATE_FIELDS)
        changes = self._settings(body)
        if "expires_in_s" in changes:
            changes["expires_s"] = _expiry(changes.pop("expires_in_s"), changes.get("expires_s"))
        key = await anyio.to_thread.run_sync(self.ring.keys.update, key_id, changes)
        self.ring.forget()
        return JSONResponse(key.to_dict())

    async def revoke(self, request: Request) -> Response:
        await self.server.client(request, admin=True)
        key = await anyio.to_thread.run_sync(self.ring.keys.revoke, request.path_params["key_id"])
        self.ring.forget()
        return JSONResponse(key.to_dict())

    # -- internals ----------------------------------------------------------------------------
    async def _body(self, request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
        body = await self.server.json_body(request)
        if not isinstance(body, dict):
            raise KeySettingsError(f"the body must be a JSON object with some of: {', '.join(fields)}")
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise KeySettingsError(f"unknown field(s) {', '.join(unknown)}; this endpoint takes: {', '.join(fields)}",
                                   unknown[0])
        return body

    def _settings(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with its routes and models checked against the server's config."""
        config = self.server.config
        names = {"routes": [route.name for route in config.routes] + config.model_names, "models": config.model_names}
        for field, known in names.items():
            values = body.get(field)
            if isinstance(values, list):
                unknown = [v for v in values if isinstance(v, str) and v not in known and not
                           (field == "routes" and v.startswith("router-"))]
                if unknown:
                    raise KeySettingsError(f"{field}: {', '.join(map(repr, unknown))} unknown to this server; it has "
                                           f"{', '.join(known)}", field)
        return dict(body)


def _expiry(expires_in_s: Any, expires_s: Any) -> float:
    if expires_s is not None:
        raise KeySettingsError("give expires_s or expires_in_s, not both", "expires_in_s")
    if isinstance(expires_in_s, bool) or not isinstance(expires_in_s, int | float) or not expires_in_s > 0:
        raise KeySettingsError(f"expires_in_s must be a number of seconds > 0, got {expires_in_s!r}", "expires_in_s")
    return time.time() + float(expires_in_s)
