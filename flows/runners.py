"""Task runners by name: threads on this machine, or a Ray / Dask cluster."""
from __future__ import annotations


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
        init = {"include_dashboard": False, "log_to_driver": False} if not address else {}
        return RayTaskRunner(address=address, init_kwargs=init)
    if name == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise RunnerError("--runner dask needs the dask extra: pip install 'cascadekit[dask]'") from None
        return DaskTaskRunner(address=address) if address else DaskTaskRunner()
    raise RunnerError(f"unknown runner {name!r}; choose local, ray or dask")
