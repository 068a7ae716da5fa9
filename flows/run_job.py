"""Run a pipeline over inputs as one job: check, write the job folder, run the flow, return the result.

Importing this module imports no Prefect: `run` applies cascadekit's settings
(flows/settings.py) first, then loads the flow (flows/job_flow.py).
"""
from __future__ import annotations

import contextlib
import gc
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pipelines.graph import Pipeline
from stages.base import ConfigError
from flows import settings
from flows.job_folder import JobFolder, JobFolderError, NoSpaceLeft, is_no_space
from flows.store import RunStore


@dataclass
class JobResult:
    """What `run` returns: the summary plus where everything lives.

    `outputs` and `errors` are read from the job folder on first use: a
    million-item job need not come back into memory just to return.
    """

    root: str
    summary: dict

    @cached_property
    def outputs(self) -> list[dict]:
        return RunStore(self.root).read_jsonl(JobFolder.OUTPUTS)

    @cached_property
    def errors(self) -> list[dict]:
        return RunStore(self.root).read_jsonl(JobFolder.ERRORS)

    @property
    def exit_code(self) -> int:
        return 0 if self.summary["failed"] == 0 else 3


def run(pipeline: Pipeline, inputs: list[Any], *, out: str = "runs", job_id: str | None = None,
        batch_size: int = 16, runner: str = "local", workers: int = 2, ray_address: str | None = None,
        show_progress: bool = False, gpu_limit: str | None = None, allow_outside_paths: bool = False,
        subtitles: str | list[str] | None = None) -> JobResult:
    """Run `pipeline` over `inputs` (paths, folders, JSONL files or dicts) as one Prefect flow.

    The same `job_id` resumes: finished stage × batch results are reused.
    `gpu_limit` names a Prefect global concurrency limit that every task of a
    GPU stage occupies one slot of (see `cascade worker`); None = no limit.
    Files named in a .jsonl must lie under its folder unless `allow_outside_paths`.
    `subtitles` ("srt,vtt" or ["srt"]) writes subtitles/ITEM.LANG.FMT and ITEM.segments.json per audio item.
    Raises ValueError (JobFolderError, ConfigError, ...) for usage errors and NoSpaceLeft
    when the disk fills up mid-run (rerun the same job id to resume).
    """
    settings.apply()
    from flows import preflight
    from flows.job import forget_job, write_job
    from flows.job_flow import cascade_job
    from flows.manifest import read_inputs, validate_items
    from flows.runners import make_task_runner
    from flows.stale_runs import crash_earlier_runs, live_run_ids

    from flows.subtitles import parse_formats

    if batch_size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
    subtitle_formats = parse_formats(subtitles)  # an unknown format: a usage error before any work
    pipeline.validate()
    preflight.check(pipeline)  # e.g. a missing model path: one usage error, not N item errors
    if runner == "local":
        # Each stage runs one batch at a time per process (flows/engine.py), so threads beyond the number
        # of stages would only prepare next batches; on Python-heavy stages they cost more in GIL
        # contention than they save (benchmarks/bench_load.py measured 1.16 with 2 threads, 1.02 with 1,
        # before this cap; `--workers 1` vs 2 on a two-stage bench_overhead shows the overlap's gain).
        workers = min(workers, len(pipeline.nodes))
    task_runner = make_task_runner(runner, workers, ray_address)  # fail on a bad runner before any work
    if gpu_limit:
        from flows.server import check_gpu_limit

        check_gpu_limit(gpu_limit)  # a usage error now, not a failed task per batch later
    job_id = job_id or new_job_id()
    folder = JobFolder.for_job(out, job_id)
    folder.prepare(inputs)  # before reading inputs: a bad --out is one line, whatever the inputs cost
    root = folder.root
    items, input_errors = validate_items(pipeline, read_inputs(pipeline, inputs, allow_outside_paths))
    try:
        write_job(root, pipeline, items, input_errors, batch_size, job_id)
    except OSError as exc:  # nothing ran yet: a usage error, like a full disk found by prepare()
        folder.remove_temp_files(include_own=True)
        raise JobFolderError(f"cannot write the job folder {root}: {exc.strerror or exc}") from None
    crash_earlier_runs(f"{pipeline.name}:{job_id}", keep=live_run_ids())  # left Running by a dead process
    flow_run = cascade_job.with_options(task_runner=task_runner, flow_run_name=f"{pipeline.name}:{job_id}")
    try:
        with _server_for_this_process(), settings.no_heartbeats_without_a_server(), _older_objects_frozen():
            summary = flow_run(root, show_progress, gpu_limit, subtitle_formats)
    except BaseException as exc:
        folder.remove_temp_files(include_own=True)  # half-written files of this run; finished ones stay
        if is_no_space(exc):
            raise NoSpaceLeft(folder.no_space_message(exc, job_id)) from None
        raise
    finally:
        forget_job(root)  # everything is in the job folder now
    if "no_space" in summary:
        folder.remove_temp_files(include_own=True)
        raise NoSpaceLeft(summary["no_space"])
    if "config_error" in summary:
        raise ConfigError(summary["config_error"])
    return JobResult(root, summary)


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _server_for_this_process():
    """Without PREFECT_API_URL, runs report to this process's own temporary server (flows/embedded_server.py)."""
    import os

    from prefect.settings import PREFECT_API_URL, temporary_settings

    if os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():
        return contextlib.nullcontext()
    from flows.embedded_server import api_url

    return temporary_settings(updates={PREFECT_API_URL: api_url()})


@contextlib.contextmanager
def _older_objects_frozen():
    """Keep the garbage collector's full passes to what the job itself makes.

    Prefect makes many short-lived objects per task run, which triggers a full
    collection every other job or so; it walked every object in the process
    (imports, loaded models, the job's items: 0.25 s at ~450k objects on this
    machine, measured with gc.callbacks around benchmarks/bench_load.py). Objects older
    than the job are frozen for its duration and unfrozen after, so nothing
    stays uncollectable. Reference counting frees objects as usual either way.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
