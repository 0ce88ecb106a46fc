"""Run the sandbox as a subprocess for tests, ``make pipeline`` and benchmarks.

A separate process keeps the server's threads, event loop and SQLite connections
away from the caller, exactly like a real remote API.

    with SandboxServer("data/sandbox", {"faults": {"default": {"error_rate": 0.05}}}) as sb:
        StripeClient(base_url=sb.base_urls["stripe"], api_key="sk_test_sandbox")
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from sandbox.config import SERVICES, TOKEN_ENV, SandboxConfig, control_headers, new_token, webhook_url

ROOT = Path(__file__).resolve().parent.parent


class SandboxServer:
    def __init__(
        self,
        folder: str | Path,
        config: SandboxConfig | dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        token: str | None = None,
    ) -> None:
        """``token`` guards the control routes: given, else CDP_SANDBOX_TOKEN, else a fresh random one."""
        self.folder = Path(folder).resolve()
        self.token = token or os.environ.get(TOKEN_ENV) or new_token()
        self.config = asdict(config) if isinstance(config, SandboxConfig) else dict(config or {})
        self.host, self.port = host, port
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        """The alert webhook receiver's secret URL (for CDP_ALERT_WEBHOOK_URL)."""
        return webhook_url(self.url, self.token)

    @property
    def base_urls(self) -> dict[str, str]:
        return {service: f"{self.url}/{service}" for service in SERVICES}

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.port = self.port or _free_port(self.host)
        self._tmp = tempfile.TemporaryDirectory(prefix="sandbox-")
        config_path = Path(self._tmp.name) / "config.json"
        config_path.write_text(json.dumps(self.config))
        self._log = Path(self._tmp.name) / "server.log"
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, TOKEN_ENV: self.token}  # the environment, not argv: ps shows argv
        command = [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--folder",
            str(self.folder),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--config",
            str(config_path),
        ]
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/_sandbox/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        output = self.log_text()
        self.stop()
        raise RuntimeError(f"sandbox did not become healthy on {self.url}:\n{output[-4000:]}")

    def stop(self) -> None:
        """SIGTERM for a graceful shutdown (stops the churn ticker), SIGKILL if it hangs."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log_text(self) -> str:
        """What the server printed so far (startup line, errors)."""
        return self._log.read_text(errors="replace") if self._log and self._log.exists() else ""

    def control(self, path: str, method: str = "GET", json: Any = None, **params: Any) -> Any:
        """Call a ``/_sandbox/*`` route, e.g. ``control("tick", "POST", changes=50)``."""
        path = path if path.startswith("/_sandbox") else f"/_sandbox/{path.lstrip('/')}"
        response = requests.request(
            method, self.url + path, json=json, params=params or None, headers=control_headers(self.token), timeout=60
        )
        response.raise_for_status()
        return response.json()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
