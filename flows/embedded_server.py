"""The temporary Prefect server of a process that has no PREFECT_API_URL, tied to that process's life.

Prefect's own temporary server outlived a SIGKILLed `cascade run` (90 s later it still held the caller's
stdout pipe) and, being in the terminal's process group, printed tracebacks on Ctrl-C. This one runs in
its own session (a terminal's Ctrl-C never reaches it), writes nothing to the caller's streams, keeps its
own database (runs of `cascade server` stay apart), and exits within a second of its parent's death: a
watchdog thread inside it polls the parent, so no signal or cleanup from the parent is needed.
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from flows import settings

_lock = threading.Lock()
_server: "EmbeddedServer | None" = None


class EmbeddedServer:
    def __init__(self, startup_timeout: float = 300.0):  # a first start migrates its database
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log = tempfile.NamedTemporaryFile(prefix="cascade-server-", suffix=".log", delete=False)
        env = {**os.environ, "PREFECT_UI_ENABLED": "false", "PREFECT__SERVER_EPHEMERAL": "1"}
        # its own database file, named once in flows/settings.py (apply() has usually set it already)
        key = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
        env.setdefault(key, settings.EMBEDDED_SERVER[key])
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flows.embedded_server", str(os.getpid()), str(self.port)],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))
        self._wait_healthy(startup_timeout)

    def _wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = Path(self.log.name).read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"the temporary Prefect server did not start (log {self.log.name}): {tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def api_url() -> str:
    """The URL of this process's temporary server, started on first use and stopped at exit."""
    global _server
    with _lock:
        if _server is None or _server.process.poll() is not None:
            _server = EmbeddedServer()
            atexit.register(_server.stop)
        return _server.api_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # reparented: the process that started us is gone
            os._exit(0)
        time.sleep(0.25)


def _serve(parent: int, port: int) -> None:
    import uvicorn

    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="critical", lifespan="on", ws_per_message_deflate=False)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
