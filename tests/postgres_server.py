"""A real, throwaway PostgreSQL server on 127.0.0.1 for tests.

It runs the system's ``initdb`` and ``pg_ctl`` in a fresh temporary directory.
PostgreSQL refuses to run as root, so as root both run as the ``postgres`` system
user (through ``runuser``, else ``su``), which then owns the temporary directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit, urlunsplit

from crossroads.upstream.servers import free_port

SYSTEM_USER = "postgres"
START_TIMEOUT_S = 30


class PostgresServer:
    """``with PostgresServer() as server:`` serves ``server.url`` (user ``postgres``, trust auth, loopback only)."""

    def __init__(self) -> None:
        self.port: int | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "start the server with `with PostgresServer() as server:`"
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def available() -> str | None:
        """``None`` if a server can be started here, else the reason it cannot (for ``pytest.skip``)."""
        if _bin_dir() is None:
            return "PostgreSQL not found: no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                return f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL as"
            if not (shutil.which("runuser") or shutil.which("su")):
                return f"running as root and neither runuser nor su is there to switch to {SYSTEM_USER!r}"
        return None

    def __enter__(self) -> Self:
        reason = self.available()
        if reason is not None:
            raise RuntimeError(reason)
        self._dir = Path(tempfile.mkdtemp(prefix="crossroads-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(self._dir, user.pw_uid, user.pw_gid)
        try:
            self._start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._dir is not None
        try:
            self._run("pg_ctl", "stop", "-D", str(self._dir / "data"), "-m", "fast", "-w")
        finally:
            self._remove()

    def _start(self) -> None:
        assert self._dir is not None
        data = self._dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        # Trust, but only over TCP from loopback (the file keeps its owner when root rewrites it).
        (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        for _ in range(3):  # the free port can be taken between choosing it and binding it
            self.port = free_port()
            # fsync=off: tests kill clients, never this server, so server-side durability is not under test.
            options = f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(self._dir))} -c fsync=off"
            log = str(self._dir / "server.log")
            started = self._run(
                "pg_ctl", "start", "-D", str(data), "-w", "-t", str(START_TIMEOUT_S), "-l", log, "-o", options, check=False
            )
            if started.returncode == 0:
                return
        raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}\n{self.log()}")

    def stop(self) -> None:
        """Stop the server (an outage); :meth:`restart` brings it back on the same port with the same data."""
        assert self._dir is not None
        self._run("pg_ctl", "stop", "-D", str(self._dir / "data"), "-m", "fast", "-w")

    def restart(self) -> None:
        assert self._dir is not None and self.port is not None
        options = f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(self._dir))} -c fsync=off"
        self._run("pg_ctl", "start", "-D", str(self._dir / "data"), "-w", "-t", str(START_TIMEOUT_S),
                  "-l", str(self._dir / "server.log"), "-o", options)

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        assert self._dir is not None
        path = self._dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of PostgreSQL's programs, as ``postgres`` when we are root."""
        bin_dir = _bin_dir()
        assert bin_dir is not None and self._dir is not None
        command = [str(bin_dir / program), *args]
        if os.geteuid() == 0:
            if shutil.which("runuser"):
                command = ["runuser", "-u", SYSTEM_USER, "--", *command]
            else:
                command = ["su", SYSTEM_USER, "-s", "/bin/sh", "-c", shlex.join(command)]
        result = subprocess.run(command, check=False, cwd=self._dir, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        result.stdout += result.stderr
        return result

    def _remove(self) -> None:
        assert self._dir is not None
        shutil.rmtree(self._dir, ignore_errors=True)


def fresh_database(url: str) -> str:
    """Create a new, empty database on the server at ``url``; its URL."""
    import psycopg

    name = f"crossroads_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return candidates[-1] if candidates else None
