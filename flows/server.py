"""A Prefect server for many machines, and the objects workers need on it.

`cascade server` runs `prefect server start` with cascadekit's defaults;
workers and deployments then find it through PREFECT_API_URL. The helpers
here create what a GPU pool needs: a process work pool and a strict global
concurrency limit with one slot per GPU.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

from flows import settings

GPU_LIMIT_PREFIX = "gpu-"


class ServerError(RuntimeError):
    """No Prefect server where one is needed, or it refused a request. A usage error."""


def prefect_exe() -> str:
    """The `prefect` script of this Python environment (not whatever is first on PATH)."""
    exe = Path(sys.executable).with_name("prefect")
    return str(exe) if exe.exists() else "prefect"


def server_command(host: str = "127.0.0.1", port: int = 4200) -> list[str]:
    return [prefect_exe(), "server", "start", "--host", host, "--port", str(port)]


def server_env(ui: bool = False, host: str = "127.0.0.1", port: int = 4200) -> dict[str, str]:
    """The environment of `prefect server start`: our defaults, minus what only the temporary server wants.

    The database stays Prefect's default one under PREFECT_HOME: runs made without PREFECT_API_URL
    go to the temporary server's own database file, so the two never mix.
    """
    env = {k: v for k, v in os.environ.items() if k not in settings.embedded_only}
    for key, value in settings.DEFAULTS.items():
        env.setdefault(key, value)
    env.pop("PREFECT_API_URL", None)  # the server is the API; it must not look for another one
    if ui:
        env["PREFECT_UI_ENABLED"] = "true"
        # The browser asks this URL for data; left unset, Prefect derives it from its own
        # settings (port 4200), not from `--port`, and the UI stays blank on any other port.
        env.setdefault("PREFECT_UI_API_URL", api_url(host, port))
        env.setdefault("PREFECT_UI_URL", api_url(host, port).removesuffix("/api"))
    return env


def api_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: tell others this machine's name
        host = socket.getfqdn()
    return f"http://{host}:{port}/api"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_api(url: str, timeout: float = 120.0, proc=None) -> None:
    """Block until `url`/health answers; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ServerError(f"no Prefect server answered at {url} within {timeout:.0f} s")


def require_api() -> str:
    """PREFECT_API_URL, or a usage error saying how to get one (workers need a real server)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ServerError("this command needs a Prefect server: run `cascade server` and export the "
                          "PREFECT_API_URL it prints")
    return url


def gpu_limit_name(pool: str) -> str:
    return f"{GPU_LIMIT_PREFIX}{pool}"


def ensure_pool(name: str, pool_type: str = "process") -> bool:
    """Create the work pool when missing; True when it was created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
                return True
            except ObjectAlreadyExists:  # another worker won the race
                return False
        if pool.type != pool_type:
            raise ServerError(f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}")
    return False


def ensure_gpu_limit(name: str, slots: int, exact: bool = False) -> int:
    """Create the global concurrency limit `name` with `slots` slots; return the limit now in force.

    Several machines start workers for one pool, each knowing only its own
    GPUs, so by default an existing limit only grows; `exact` sets it as given.
    """
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    if slots < 1:
        raise ServerError(f"a GPU limit needs at least one slot, got {slots}")
    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                return slots
            except ObjectAlreadyExists:
                current = client.read_global_concurrency_limit_by_name(name)
        wanted = slots if exact else max(slots, current.limit)
        if wanted != current.limit or not current.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=wanted, active=True))
        return wanted


def gpu_limit_exists(name: str) -> bool:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return True
        except ObjectNotFound:
            return False


def check_gpu_limit(name: str) -> None:
    """Raise a ValueError (usage error) when the limit is not on the server."""
    if not gpu_limit_exists(name):
        raise ValueError(f"GPU limit {name!r} does not exist on the Prefect server; `cascade worker --pool POOL` "
                         f"creates {GPU_LIMIT_PREFIX}POOL, or run `prefect gcl create {name} --limit N`")

