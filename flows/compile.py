"""Compile a pipeline into one Prefect flow and run it.

One task per stage × micro-batch (never per item: a task run costs
milliseconds). Tasks pass only small strings; data goes through the run store.
"""
from __future__ import annotations

import contextlib
import gc
import queue
import re
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.graph import Pipeline
from flows.engine import run_stage_batch
from flows.job import forget_job, load_job, write_job
from flows import preflight
from flows.manifest import read_inputs, validate_items
from flows.results import collect
from flows.store import RunStore
from flows.runners import make_task_runner, resource_options
from flows.stale_runs import crash_earlier_runs, live_run_ids


@task(name="stage-batch", persist_result=False, cache_policy=NO_CACHE)
def stage_batch(root: str, node: str, index: int, upstream: dict[str, dict], gpu_limit: str | None = None,
                run_token: str = "") -> dict:
    keys = {u: s["key"] for u, s in upstream.items()}
    load_job(root, run_token)  # a new run token makes long-lived workers re-read the job
    if not gpu_limit:  # local runs: no limit, no server calls
        return _logged(run_stage_batch(root, node, index, keys), node, index)
    from prefect.concurrency.sync import concurrency

    # strict: a missing limit is an error, never a silent free-for-all on the GPUs. The slot is leased
    # and renewed while we run; a killed worker's slot comes back when its lease lapses (the 60 s minimum).
    with concurrency(gpu_limit, occupy=1, strict=True, lease_duration=60):
        return _logged(run_stage_batch(root, node, index, keys), node, index)


def _logged(summary: dict, node: str, index: int) -> dict:
    """One INFO line per batch in the task run's logs on the server (the console shows WARNING and up)."""
    what = "reused" if summary["cached"] else f"done in {summary['seconds']:.2f} s"
    try:
        logger = get_run_logger()
    except MissingContextError:  # the task's function called directly (tests, tools)
        return summary
    logger.info("%s batch %d %s: %d ok, %d failed", node, index, what, summary["ok"], summary["failed"])
    return summary


@flow(name="cascade-job", persist_result=False, log_prints=False)
def cascade_job(root: str, show_progress: bool = False, gpu_limit: str | None = None) -> dict:
    """Submit each stage × batch as soon as its upstream batches are done (pipelining across stages).

    Upstream results reach a task as plain values, not as Prefect futures:
    resolving futures inside a task can poll the API and stall a batch for
    seconds, while here the flow already holds every finished summary.
    """
    start = time.perf_counter()
    job = load_job(root)
    pipe = job.pipeline
    n_batches = len(job.batches)
    run_token = uuid.uuid4().hex  # tells long-lived workers that cached jobs of this root are stale
    runners = {node: stage_batch.with_options(
        retries=pipe.nodes[node].stage.config.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=pipe.nodes[node].stage.config.retry_delay),
        # Tags make Prefect check tag concurrency limits on the server at every task start (seconds of
        # stalls seen here), so GPU tasks carry the tag only when the run is GPU-managed anyway.
        tags=["gpu"] if pipe.nodes[node].stage.uses_gpu and gpu_limit else [],
        task_run_name="{node}[{index}]",  # a template filled per call: no Task copy per batch
    ) for node in job.order}
    downstream = {n: [d for d in job.order if n in pipe.nodes[d].upstream] for n in job.order}
    runs: dict[str, list[dict | None]] = {n: [None] * n_batches for n in job.order}
    failures: dict[tuple[str, int], str] = {}
    finished: queue.Queue = queue.Queue()
    outstanding = 0

    def submit(node: str, i: int) -> None:
        nonlocal outstanding
        stage = pipe.nodes[node].stage
        upstream = {u: runs[u][i] for u in pipe.nodes[node].upstream}
        with resource_options(stage.config):  # Ray: num_cpus / num_gpus per task
            fut = runners[node].submit(root, node, i, upstream, gpu_limit if stage.uses_gpu else None, run_token)
        outstanding += 1
        fut.add_done_callback(lambda f, key=(node, i): finished.put((key, f)))

    for node in pipe.roots():
        for i in range(n_batches):
            submit(node, i)
    status = JobProgress(job.store, job.order, n_batches)
    with _progress(show_progress, len(job.order) * n_batches) as (progress, bar):
        while outstanding:
            (node, i), fut = finished.get()
            outstanding -= 1
            fut.wait()  # sets the final state locally; `.state` alone would ask the API
            state = fut.state
            if state.is_completed():
                runs[node][i] = _completed_result(fut)
                for d in downstream[node]:  # a batch whose upstream failed is never submitted
                    if all(runs[u][i] is not None for u in pipe.nodes[d].upstream):
                        submit(d, i)
            else:
                failures[(node, i)] = _failure_message(state)
                get_run_logger().warning("%s batch %d failed: %s", node, i, failures[(node, i)])
            status.record(node, runs[node][i])
            progress.advance(bar)
    status.write()
    summary = collect(job, runs, failures, time.perf_counter() - start)
    for node, s in summary["stages"].items():
        get_run_logger().info("stage %s: %d ok, %d failed, %d/%d batches reused", node, s["ok"], s["failed"],
                              s["cached_batches"], s["batches"])
    _publish(summary)
    return summary


class JobProgress:
    """progress.json: finished batches per stage, for `cascade status` while a job runs or after it died.

    Written at most once a second (and at the end): a small file, but a job can have thousands of batches.
    """

    def __init__(self, store: RunStore, order: list[str], n_batches: int):
        self.store, self.last = store, 0.0
        self.stages = {n: {"batches": n_batches, "done": 0, "reused": 0, "failed": 0} for n in order}
        self.write()

    def record(self, node: str, summary: dict | None) -> None:
        s = self.stages[node]
        if summary is None:
            s["failed"] += 1
        else:
            s["done"] += 1
            s["reused"] += summary["cached"]
        if time.monotonic() - self.last >= 1.0:
            self.write()

    def write(self) -> None:
        self.last = time.monotonic()
        self.store.write_json("progress.json", {"stages": self.stages, "updated": time.time()})


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
        return RunStore(self.root).read_jsonl("outputs.jsonl")

    @cached_property
    def errors(self) -> list[dict]:
        return RunStore(self.root).read_jsonl("errors.jsonl")

    @property
    def exit_code(self) -> int:
        return 0 if self.summary["failed"] == 0 else 3


def run(pipeline: Pipeline, inputs: list[Any], *, out: str = "runs", job_id: str | None = None,
        batch_size: int = 16, runner: str = "local", workers: int = 2, ray_address: str | None = None,
        show_progress: bool = False, gpu_limit: str | None = None) -> JobResult:
    """Run `pipeline` over `inputs` (paths, folders, JSONL files or dicts) as one Prefect flow.

    The same `job_id` resumes: finished stage × batch results are reused.
    `gpu_limit` names a Prefect global concurrency limit that every task of a
    GPU stage occupies one slot of (see `cascade worker`); None = no limit.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
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
    job_id = job_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", job_id):
        raise ValueError(f"job id {job_id!r}: use letters, digits, '.', '_' and '-'")
    root = f"{str(out).rstrip('/')}/{job_id}"
    if "://" not in root:
        root = str(Path(root).resolve())
    items, input_errors = validate_items(pipeline, read_inputs(pipeline, inputs))
    write_job(root, pipeline, items, input_errors, batch_size, job_id)
    crash_earlier_runs(f"{pipeline.name}:{job_id}", keep=live_run_ids())  # left Running by a dead process
    flow_run = cascade_job.with_options(task_runner=task_runner, flow_run_name=f"{pipeline.name}:{job_id}")
    try:
        with _no_heartbeats_without_a_server(), _older_objects_frozen():
            summary = flow_run(root, show_progress, gpu_limit)
    finally:
        forget_job(root)  # everything is in the job folder now
    return JobResult(root, summary)


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


def _completed_result(fut) -> dict:
    """A finished task's return value, read from its final state in memory.

    `fut.result()` would route the same read through Prefect's event-loop
    thread, a few milliseconds per task on the flow's critical path.
    """
    from prefect.results import ResultRecord

    data = fut.state.data
    return data.result if isinstance(data, ResultRecord) else fut.result()


_quiet_settings: dict[int, tuple] = {}  # id(settings) -> (settings, the same without heartbeats)


def _no_heartbeats_without_a_server():
    """Heartbeats let a long-lived server spot crashed runs; the temporary one dies with us.

    Prefect's heartbeat thread sleeps in 1 s steps, so joining it costs up to a
    second at the end of every job: skip it when there is no real server.
    Building the changed settings costs ~0.1 s, so it is done once per settings object.
    """
    import os

    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if os.environ.get("PREFECT_API_URL"):
        return contextlib.nullcontext()
    ctx = get_settings_context()
    base, quiet = _quiet_settings.get(id(ctx.settings), (None, None))
    if base is not ctx.settings:
        quiet = ctx.settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
        _quiet_settings[id(ctx.settings)] = (ctx.settings, quiet)
    return SettingsContext(profile=ctx.profile, settings=quiet)


def _failure_message(state) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:  # noqa: BLE001 - the message is all we need
        exc = e
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "task failed"


def _progress(show: bool, total: int):
    class _Ctx:
        def __enter__(self):
            self.p = Progress(TextColumn("[bold]cascade"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), transient=True, disable=not show)
            self.p.__enter__()
            return self.p, self.p.add_task("batches", total=total)

        def __exit__(self, *exc):
            return self.p.__exit__(*exc)

    return _Ctx()


def _publish(summary: dict) -> None:
    """The same summary as a Prefect table artifact (and metrics as markdown)."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"cascade-{summary['job_id']}".lower()).strip("-")
    rows = [{"stage": n, **s} for n, s in summary["stages"].items()]
    try:
        create_table_artifact(rows, key=key, description=f"{summary['pipeline']}: {summary['ok']}/"
                              f"{summary['items']} items ok")
        if summary["metrics"]:
            body = "\n".join(f"| {k} | {v} |" for k, v in summary["metrics"].items())
            create_markdown_artifact(f"| metric | value |\n|---|---|\n{body}", key=f"{key}-metrics")
    except Exception:  # noqa: BLE001 - an artifact is a courtesy; never fail a finished job for it
        pass
