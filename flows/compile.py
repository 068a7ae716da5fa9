"""Compile a pipeline into one Prefect flow and run it.

One task per stage × micro-batch (never per item: a task run costs
milliseconds). Tasks pass only small strings; data goes through the run store.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipelines.graph import Pipeline
from flows.engine import run_stage_batch
from flows.job import load_job, write_job
from flows.manifest import read_inputs, validate_items
from flows.results import collect
from flows.runners import make_task_runner


@task(name="stage-batch", persist_result=False, cache_policy=NO_CACHE)
def stage_batch(root: str, node: str, index: int, upstream: dict[str, dict]) -> dict:
    return run_stage_batch(root, node, index, {u: s["key"] for u, s in upstream.items()})


@flow(name="cascade-job", persist_result=False, log_prints=False)
def cascade_job(root: str, show_progress: bool = False) -> dict:
    start = time.perf_counter()
    job = load_job(root)
    pipe = job.pipeline
    futures: dict[tuple[str, int], Any] = {}
    for node in job.order:
        stage = pipe.nodes[node].stage
        runner = stage_batch.with_options(
            retries=stage.config.retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=stage.config.retry_delay),
            tags=["gpu"] if stage.uses_gpu else [],
        )
        for i in range(len(job.batches)):
            upstream = {u: futures[(u, i)] for u in pipe.nodes[node].upstream}
            futures[(node, i)] = runner.with_options(task_run_name=f"{node}[{i}]").submit(root, node, i, upstream)

    runs: dict[str, list[dict | None]] = {n: [None] * len(job.batches) for n in job.order}
    failures: dict[tuple[str, int], str] = {}
    where = {f.task_run_id: key for key, f in futures.items()}
    with _progress(show_progress, len(futures)) as (progress, bar):
        for fut in as_completed(list(futures.values())):
            node, i = where[fut.task_run_id]
            fut.wait()  # sets the final state locally; `.state` alone would ask the API
            state = fut.state
            if state.is_completed():
                runs[node][i] = fut.result()
            else:
                failures[(node, i)] = _failure_message(state)
            progress.advance(bar)
    summary = collect(job, runs, failures, time.perf_counter() - start)
    _publish(summary)
    return summary


@dataclass
class JobResult:
    """What `run` returns: the summary plus where everything lives."""

    root: str
    summary: dict
    outputs: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.summary["failed"] == 0 else 3


def run(pipeline: Pipeline, inputs: list[Any], *, out: str = "runs", job_id: str | None = None,
        batch_size: int = 16, runner: str = "local", workers: int = 2, ray_address: str | None = None,
        show_progress: bool = False) -> JobResult:
    """Run `pipeline` over `inputs` (paths, folders, JSONL files or dicts) as one Prefect flow.

    The same `job_id` resumes: finished stage × batch results are reused.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {batch_size}")
    pipeline.validate()
    task_runner = make_task_runner(runner, workers, ray_address)  # fail on a bad runner before any work
    job_id = job_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", job_id):
        raise ValueError(f"job id {job_id!r}: use letters, digits, '.', '_' and '-'")
    root = f"{str(out).rstrip('/')}/{job_id}"
    if "://" not in root:
        root = str(Path(root).resolve())
    items, input_errors = validate_items(pipeline, read_inputs(pipeline, inputs))
    job = write_job(root, pipeline, items, input_errors, batch_size, job_id)
    flow_run = cascade_job.with_options(task_runner=task_runner, flow_run_name=f"{pipeline.name}:{job_id}")
    summary = flow_run(root, show_progress)
    return JobResult(root, summary, job.store.read_jsonl("outputs.jsonl"), job.store.read_jsonl("errors.jsonl"))


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
