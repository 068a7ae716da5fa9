"""A real `cascade server` (Prefect server) on a free loopback port, for tests of workers, deployments, Ray.

Isolated from the session's test harness: its own PREFECT_HOME, and used only
by `cascade` subprocesses through the env this yields.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import CASCADE, ROOT


def server_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # workers poll every 10 s by default
        "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p),
    })
    return env


@contextmanager
def running_server(home: Path, timeout: float = 150.0, ui: bool = False):
    from flows.server import free_port, wait_for_api

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(home, port)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([*CASCADE, "server", "--port", str(port), *(["--ui"] if ui else [])], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_api(env["PREFECT_API_URL"], timeout=timeout, proc=proc)
        yield env
    finally:
        stop_group(proc)
        log.close()


def start_group(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A process in its own session, so that it and every child can be killed together."""
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def kill_flow_runs(env: dict) -> None:
    """SIGKILL flow-run processes our workers started against this server.

    Prefect puts each flow run in a session of its own, so killing a worker's
    group leaves them running; they are recognised by our PREFECT_HOME.
    """
    marker = f"PREFECT_HOME={env['PREFECT_HOME']}".encode()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
            if b"prefect.engine" in cmdline and marker in (proc_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc_dir.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
