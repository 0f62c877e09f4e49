"""Running crossroads' server for tests: in a thread, or as a real `crossroads serve` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from crossroads.upstream.servers import ThreadedServer, free_port


class ServerThread(ThreadedServer):
    """The app of ``gateway`` served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, gateway: Any, config_path: str | None = None):
        from crossroads.serve.app import make_app

        self.app = make_app(gateway, config_path)
        super().__init__(self.app)

    @property
    def gateway(self) -> Any:
        """The gateway serving now (a reload replaces it)."""
        return self.app.state.server.gateway


class ServerProcess:
    """``crossroads serve --config CONFIG`` as a child process (so that it can be killed)."""

    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"crossroads-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"server-{self.port}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.command = ["serve", "--config", str(self.config_path)]  # arguments after `crossroads`

    def __enter__(self) -> ServerProcess:
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crossroads.cli.main", *self.command, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"crossroads serve did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __exit__(self, *exc: object) -> None:
        self.stop()
