"""A job on disk: the pipeline as JSON, the items, the micro-batches.

Everything a worker needs to run one stage × batch is in the job folder, so
tasks take only (job root, node, batch index, upstream keys): small strings
that any runner (threads, Ray, a remote worker) can ship.
"""
from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache

from pipelines.graph import Pipeline
from stages.base import ItemError
from flows.job_folder import JobFolder
from flows.runners import USER_PATH_ENV
from flows.store import RunStore, forget_batches

@dataclass
class Job:
    root: str
    store: RunStore
    pipeline: Pipeline
    items: dict[str, dict]  # id -> item, in input order
    batches: list[list[str]]
    input_errors: list[ItemError]
    job_id: str

    @property
    def order(self) -> list[str]:
        return self.pipeline.order()


def write_job(root: str, pipe: Pipeline, items: list[dict], input_errors: list[ItemError],
              batch_size: int, job_id: str) -> Job:
    store = RunStore(root)
    batches = [[it["id"] for it in items[i:i + batch_size]] for i in range(0, len(items), batch_size)]
    if store.exists(JobFolder.SUMMARY):  # the job runs again: a summary of the last run must not pass for this one
        store.fs.rm(store.path(JobFolder.SUMMARY))
    store.write_jsonl(JobFolder.MANIFEST, items)
    store.write_json(JobFolder.JOB, {
        "job_id": job_id, "batch_size": batch_size, "pipeline": pipe.to_spec(),
        "batches": batches, "input_errors": [e.model_dump() for e in input_errors],
    })
    job = Job(root, store, pipe, {it["id"]: it for it in items}, batches, input_errors, job_id)
    with _load_lock:
        _load_cached.cache_clear()
        _live[root] = job  # tasks in this process use the live stages (even ones defined in a test)
    return job


_load_lock = threading.Lock()
_live: dict[str, Job] = {}


_run_tokens: dict[str, str] = {}


def forget_job(root: str) -> None:
    """Drop a finished job from this process: its items and cached batch rows.

    A long-lived process (a notebook, a scheduler, a benchmark) runs job after
    job; keeping each one's rows would grow memory and make every full
    garbage collection walk them. The job folder keeps everything.
    """
    with _load_lock:
        _live.pop(root, None)
    forget_batches(RunStore(root).url)


def load_job(root: str, run_token: str = "") -> Job:
    """The job as this process sees it; built once per process and reused by every task.

    `run_token` names one run of the job. Workers of a long-lived Ray cluster
    outlive runs: a rerun of the same job id with other inputs or stage
    settings must not meet the job cached by the last run, so a new token
    drops the cached job (loaded models stay; their cache is separate).
    """
    with _load_lock:
        if root in _live:  # the driver's own live job is always current
            return _live[root]
        if run_token and _run_tokens.get(root) != run_token:
            _load_cached.cache_clear()
            _run_tokens[root] = run_token
        return _load_cached(root)


@lru_cache(maxsize=8)
def _load_cached(root: str) -> Job:
    folder = os.environ.get(USER_PATH_ENV)
    if folder and folder not in sys.path:  # a worker: the driver's own stage modules, behind installed ones
        sys.path.append(folder)
    store = RunStore(root)
    meta = store.read_json(JobFolder.JOB)
    items = {it["id"]: it for it in store.read_jsonl(JobFolder.MANIFEST)}
    return Job(root, store, Pipeline.from_spec(meta["pipeline"]), items, meta["batches"],
               [ItemError(**e) for e in meta["input_errors"]], meta["job_id"])
