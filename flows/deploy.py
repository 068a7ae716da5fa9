"""Scheduled batch jobs: a Prefect deployment that reruns one job over a folder of inputs.

Every run of a deployment uses the same job id (from the deployment's name),
so a nightly run over a growing folder computes only what is new: finished
stage × batch results are found in the run store by their keys.
"""
from __future__ import annotations

import glob
import os
import re
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.job_folder import JobFolder, check_job_id

FLOW_NAME = "cascade-scheduled"


@flow(name=FLOW_NAME, persist_result=False, log_prints=False)
def scheduled_job(pipeline: str, inputs: list[str], out: str, job_id: str, params: dict[str, str] | None = None,
                  batch_size: int = 16, runner: str = "local", workers: int = 2, ray_address: str | None = None,
                  gpu_limit: str | None = None, workdir: str | None = None) -> dict:
    """Resolve the pipeline, expand the input globs as they are now, run (or resume) the job."""
    from pipelines.catalog import resolve
    from flows import settings
    from flows.manifest import read_inputs
    from flows.run_job import run

    settings.apply()  # the worker has imported prefect already, but not torch yet
    if workdir:  # where `cascade deploy` ran: relative paths and `module:attribute` pipelines resolve there
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"deployment folder {workdir} does not exist on this worker")
        os.chdir(workdir)
        if ":" in pipeline and workdir not in sys.path:  # last: never ahead of installed packages
            sys.path.append(workdir)
    pipe = resolve(pipeline, params or {})
    paths = expand_inputs(inputs)
    if not paths:
        get_run_logger().warning("no inputs match %s; the job runs over zero items", inputs)
    items = keep_previous_order(read_inputs(pipe, paths), JobFolder.for_job(out, job_id).root)
    result = run(pipe, items, out=out, job_id=job_id, batch_size=batch_size, runner=runner, workers=workers,
                 ray_address=ray_address, gpu_limit=gpu_limit)
    return result.summary


def expand_inputs(patterns: list[str]) -> list[str]:
    """Local globs (`**` allowed) -> sorted existing paths; a plain path stays as it is."""
    paths: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            paths += sorted(glob.glob(pattern, recursive=True))
        elif os.path.exists(pattern):
            paths.append(pattern)
    return list(dict.fromkeys(paths))


def keep_previous_order(items: list[dict], root: str) -> list[dict]:
    """Items the job saw before keep their old order, new ones follow.

    Micro-batches are cut in item order, so inputs added to the folder (even
    ones that sort first) leave the old batches, and their keys, unchanged.
    """
    from flows.store import RunStore

    try:
        store = RunStore(root)
        manifest = JobFolder.MANIFEST
        previous = [row["id"] for row in store.read_jsonl(manifest)] if store.exists(manifest) else []
    except (OSError, ValueError):
        previous = []
    rank = {item_id: n for n, item_id in enumerate(previous)}
    ids = [str(it.get("id", n)) for n, it in enumerate(items)]
    order = sorted(range(len(items)), key=lambda n: (ids[n] not in rank, rank.get(ids[n], n)))
    return [items[n] for n in order]


def job_id_for(deployment: str) -> str:
    """A stable job id from a deployment name (letters, digits, '.', '_', '-')."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", deployment).strip("-.")
    if not slug:
        raise ValueError(f"cannot derive a job id from deployment name {deployment!r}")
    return check_job_id(slug)


def deploy(pipeline: str, name: str, pool: str, *, inputs: list[str], out: str = "runs",
           params: dict[str, str] | None = None, cron: str | None = None, interval: float | None = None,
           batch_size: int = 16, runner: str = "local", workers: int = 2, ray_address: str | None = None,
           gpu_limit: str | None = "auto", job_id: str | None = None, workdir: str | None = None) -> dict[str, Any]:
    """Create (or update) the deployment `name` on the work pool `pool`; returns its parameters.

    `gpu_limit="auto"` uses the pool's limit `gpu-POOL` when it exists (`cascade worker` makes it).
    """
    from prefect.types.entrypoint import EntrypointType

    from flows.server import ensure_pool, gpu_limit_exists, gpu_limit_name

    if cron and interval:
        raise ValueError("give --cron or --interval, not both")
    if interval is not None and interval <= 0:
        raise ValueError(f"--interval must be > 0 seconds, got {interval}")
    workdir = str(Path(workdir or os.getcwd()).resolve())
    absolute = lambda p: p if "://" in p else str(Path(workdir, os.path.expanduser(p)).resolve())  # noqa: E731
    ensure_pool(pool)
    if gpu_limit == "auto":
        gpu_limit = gpu_limit_name(pool) if gpu_limit_exists(gpu_limit_name(pool)) else None
    elif gpu_limit in ("", "none"):
        gpu_limit = None
    parameters = {
        "pipeline": pipeline, "inputs": [absolute(p) for p in inputs], "out": absolute(out),
        "job_id": check_job_id(job_id) if job_id else job_id_for(name), "params": dict(params or {}),
        "batch_size": batch_size,
        "runner": runner, "workers": workers, "ray_address": ray_address, "gpu_limit": gpu_limit,
        "workdir": workdir,
    }
    # Module entrypoint: any machine with cascadekit installed can load the flow; no image, no upload.
    scheduled_job.deploy(name=name, work_pool_name=pool, cron=cron, interval=interval, parameters=parameters,
                         build=False, push=False, print_next_steps=False, ignore_warnings=True,
                         entrypoint_type=EntrypointType.MODULE_PATH,
                         description=f"cascadekit job {parameters['job_id']}: {pipeline} over {inputs}")
    return parameters


def submit(name: str, wait: bool = False, timeout: float | None = None, poll: float = 2.0):
    """Start a run of deployment `name` now; with `wait`, block until it ends. Returns the flow run."""
    from prefect.deployments import run_deployment

    full = name if "/" in name else f"{FLOW_NAME}/{name}"
    return run_deployment(full, timeout=(timeout if wait else 0), poll_interval=poll, as_subflow=False)


def cancel_run(flow_run_id) -> None:
    """Ask the run's worker to stop it (Prefect's Cancelling state; a scheduled run is cancelled outright)."""
    from prefect import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelling(message="cancelled by `cascade submit --cancel-on-timeout`"),
                                  force=True)


def summary_of(flow_run) -> dict | None:
    """The job summary a finished run of a deployment wrote into the run store."""
    from flows.store import RunStore

    params = flow_run.parameters
    store = RunStore(JobFolder.for_job(params["out"], params["job_id"]).root)
    return store.read_json(JobFolder.SUMMARY) if store.exists(JobFolder.SUMMARY) else None
