"""Task runners by name: threads on this machine, or a Ray / Dask cluster."""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext

# The driver's folder when its `module:attribute` code is importable from there: workers append it to
# sys.path (flows/job.py), behind installed packages. PYTHONPATH would put it ahead of site-packages.
USER_PATH_ENV = "CASCADEKIT_USER_PATH"


class RunnerError(ValueError):
    pass


def make_task_runner(name: str = "local", workers: int = 2, address: str | None = None):
    if name == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        # Bounded: Prefect's default pool is unbounded.
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    if name == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise RunnerError("--runner ray needs the ray extra: pip install 'cascadekit[ray]'") from None
        # A cluster of our own gets `workers` CPUs, like the thread pool gets `workers` threads.
        init = {"include_dashboard": False, "log_to_driver": False, "num_cpus": max(1, workers)} if not address else {}
        # Ray workers run Prefect's task engine themselves: they need the API and our code.
        init["runtime_env"] = {"env_vars": _ray_worker_env(address)}
        if address:
            _use_token_auth_when_available()
        # "local" always starts a cluster of our own: with no address, ray.init() joins any cluster that
        # happens to run on this machine, which refuses our num_cpus.
        return RayTaskRunner(address=address or "local", init_kwargs=init)
    if name == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise RunnerError("--runner dask needs the dask extra: pip install 'cascadekit[dask]'") from None
        return DaskTaskRunner(address=address) if address else DaskTaskRunner()
    raise RunnerError(f"unknown runner {name!r}; choose local, ray or dask")


def _use_token_auth_when_available() -> None:
    """Connect to a token-protected cluster the way `ray start` made it.

    `ray start` (Ray 2.5x and later) turns token authentication on and stores the token; a client
    that joins it does not, unless RAY_AUTH_MODE=token is set, and then retries for 20 s and fails.
    The user's own RAY_AUTH_MODE always wins.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file):
        os.environ["RAY_AUTH_MODE"] = "token"


def _ray_worker_env(address: str | None) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    from flows.settings import DEFAULTS

    api = PREFECT_API_URL.value()
    if not api:
        if address and address != "auto":
            raise RunnerError("a Ray cluster reports task runs to a Prefect server it can reach: start "
                              "`cascade server --host 0.0.0.0` and export PREFECT_API_URL on the driver")
        # No server configured: start Prefect's temporary one now (the driver's client reuses this
        # very instance) so that Ray workers on this machine report to it instead of each starting its own.
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start()
        api = server.api_url
    env = {k: os.environ.get(k, v) for k, v in DEFAULTS.items()}
    env["PREFECT_API_URL"] = api
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if os.getcwd() in sys.path:  # stages named `module:Class` from the driver's folder import on workers too
        env[USER_PATH_ENV] = os.getcwd()
    return env


def resource_options(config):
    """Per-task resource requests while submitting: Ray's num_cpus / num_gpus from the stage config.

    A no-op for other runners, so the flow can always wrap its submits in it.
    """
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None)
    if not type(runner).__module__.startswith("prefect_ray"):
        return nullcontext()
    from prefect_ray.context import remote_options

    options = {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus}
    if config.num_gpus:
        # Ray retires a GPU task's worker process after one call by default; keeping it keeps the
        # process-wide model cache warm for the next batch.
        options["max_calls"] = 0
    return remote_options(**options)
