"""One job as one Prefect flow, and the job's progress file.

One task per stage × micro-batch (never per item: a task run costs
milliseconds). Tasks pass only small strings; data goes through the run store.
`flows.run_job.run` writes the job folder and calls the flow.
"""
from __future__ import annotations

import queue
import re
import time
import uuid
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.engine import run_stage_batch
from flows.job import load_job
from flows.job_folder import JobFolder, is_no_space
from flows.results import collect
from flows.runners import resource_options


@task(name="stage-batch", persist_result=False, cache_policy=NO_CACHE)
def stage_batch(root: str, node: str, index: int, upstream: dict[str, dict], gpu_limit: str | None = None,
                run_token: str = "") -> dict:
    keys = {u: s["key"] for u, s in upstream.items()}
    load_job(root, run_token)  # a new run token makes long-lived workers re-read the job
    try:
        if not gpu_limit:  # local runs: no limit, no server calls
            return _logged(run_stage_batch(root, node, index, keys), node, index)
        from prefect.concurrency.sync import concurrency

        # strict: a missing limit is an error, never a silent free-for-all on the GPUs. The slot is leased
        # and renewed while we run; a killed worker's slot comes back when its lease lapses (the 60 s minimum).
        with concurrency(gpu_limit, occupy=1, strict=True, lease_duration=60):
            return _logged(run_stage_batch(root, node, index, keys), node, index)
    except OSError as exc:
        if not is_no_space(exc):
            raise
        # A full disk is no task failure to retry or log a traceback for: the flow stops and says what to free.
        return {"no_space": JobFolder(root).no_space_message(exc, load_job(root).job_id)}


def _logged(summary: dict, node: str, index: int) -> dict:
    """One INFO line per batch in the task run's logs on the server (the console shows WARNING and up)."""
    try:
        logger = get_run_logger()
    except MissingContextError:  # the task's function called directly (tests, tools)
        return summary
    if "config_error" in summary:  # the CLI prints it once; the server's log keeps it too
        logger.info("%s batch %d stopped the job: %s", node, index, summary["config_error"])
        return summary
    what = "reused" if summary["cached"] else f"done in {summary['seconds']:.2f} s"
    logger.info("%s batch %d %s: %d ok, %d failed", node, index, what, summary["ok"], summary["failed"])
    return summary


@flow(name="cascade-job", persist_result=False, log_prints=False)
def cascade_job(root: str, show_progress: bool = False, gpu_limit: str | None = None,
                subtitles: list[str] | None = None) -> dict:
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
    status = JobProgress(job, n_batches)

    def submit(node: str, i: int) -> None:
        nonlocal outstanding
        stage = pipe.nodes[node].stage
        upstream = {u: runs[u][i] for u in pipe.nodes[node].upstream}
        with resource_options(stage.config):  # Ray: num_cpus / num_gpus per task
            fut = runners[node].submit(root, node, i, upstream, gpu_limit if stage.uses_gpu else None, run_token)
        outstanding += 1
        fut.add_done_callback(lambda f, key=(node, i): finished.put((key, f)))

    for node in pipe.roots() if not status.stopped else []:
        for i in range(n_batches):
            submit(node, i)
    with _progress(show_progress, len(job.order) * n_batches) as (progress, bar):
        while outstanding:
            (node, i), fut = finished.get()
            outstanding -= 1
            fut.wait()  # sets the final state locally; `.state` alone would ask the API
            state = fut.state
            result = _completed_result(fut) if state.is_completed() else None
            if result and "no_space" in result:
                status.no_space = status.no_space or result["no_space"]
            elif result and "config_error" in result:  # the stage said: every item would fail alike
                status.config_error = status.config_error or result["config_error"]
            elif result:
                runs[node][i] = result
                for d in downstream[node]:  # a batch whose upstream failed is never submitted
                    if not status.stopped and all(runs[u][i] is not None for u in pipe.nodes[d].upstream):
                        submit(d, i)
            else:
                failures[(node, i)] = _failure_message(state)
                get_run_logger().warning("%s batch %d failed: %s", node, i, failures[(node, i)])
            status.record(node, runs[node][i])
            progress.advance(bar)
    status.write()
    if not status.no_space:
        try:
            summary = collect(job, runs, failures, time.perf_counter() - start, subtitles)
        except OSError as exc:
            if not is_no_space(exc):
                raise
            status.no_space = JobFolder(root).no_space_message(exc, job.job_id)
    if status.no_space:  # returned, not raised: Prefect would log the flow's failure with a traceback
        return {"no_space": status.no_space}
    if status.config_error:  # the same: `run` raises it as one usage error
        return {"config_error": status.config_error}
    for node, s in summary["stages"].items():
        get_run_logger().info("stage %s: %d ok, %d failed, %d/%d batches reused", node, s["ok"], s["failed"],
                              s["cached_batches"], s["batches"])
    _publish(summary, root)
    return summary


class JobProgress:
    """The progress file: finished batches per stage, for `cascade status` while a job runs or after it died.

    Written at most once a second (and at the end): a small file, but a job can have thousands of batches.
    `no_space` holds the message once the disk filled up, `config_error` once a stage found a mistake that
    hits every item (a model that cannot load): either way the job stops submitting batches.
    """

    def __init__(self, job, n_batches: int):
        self.store, self.last, self.job_id = job.store, 0.0, job.job_id
        self.stages = {n: {"batches": n_batches, "done": 0, "reused": 0, "failed": 0} for n in job.order}
        self.no_space: str | None = None
        self.config_error: str | None = None
        self.write()

    @property
    def stopped(self) -> bool:
        return bool(self.no_space or self.config_error)

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
        try:
            self.store.write_json(JobFolder.PROGRESS, {"stages": self.stages, "updated": time.time()})
        except OSError as exc:
            if not is_no_space(exc):
                raise
            self.no_space = self.no_space or JobFolder(self.store.url).no_space_message(exc, self.job_id)


def _completed_result(fut) -> dict:
    """A finished task's return value, read from its final state in memory.

    `fut.result()` would route the same read through Prefect's event-loop
    thread, a few milliseconds per task on the flow's critical path.
    """
    from prefect.results import ResultRecord

    data = fut.state.data
    return data.result if isinstance(data, ResultRecord) else fut.result()


def _failure_message(state) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:  # noqa: BLE001 - the message is all we need
        exc = e
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "task failed"


def subtitle_rows(files: dict[str, list[str]], root: str) -> list[dict]:
    """One row per item: a link (file URI, or the fsspec URI as it is) to each of its subtitle files,
    in a column named by what follows the item's name (`en.srt`, `de.vtt`, `segments.json`)."""
    base = Path(root).as_uri() if root and "://" not in root else root.rstrip("/")
    rows = []
    for item, paths in list(files.items())[:_ARTIFACT_SUBTITLE_ROWS]:
        prefix = JobFolder.segments_file(item).removesuffix("segments.json")
        rows.append({"item": item, **{p.removeprefix(prefix): f"[{p}]({base}/{p})" for p in paths}})
    return rows


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


_ARTIFACT_SUBTITLE_ROWS = 500  # an artifact is for people: past this, the job folder lists the rest


def _publish(summary: dict, root: str = "") -> None:
    """The same summary as a Prefect table artifact (and metrics as markdown); with subtitles, a
    table of each item's subtitle files, linked by URI."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"cascade-{summary['job_id']}".lower()).strip("-")
    rows = [{"stage": n, **s} for n, s in summary["stages"].items()]
    try:
        create_table_artifact(rows, key=key, description=f"{summary['pipeline']}: {summary['ok']}/"
                              f"{summary['items']} items ok")
        if summary.get("subtitles"):
            create_table_artifact(subtitle_rows(summary["subtitles"], root), key=f"{key}-subtitles",
                                  description=f"{summary['pipeline']}: subtitles in {root}/{JobFolder.SUBTITLES}")
        if summary["metrics"]:
            body = "\n".join(f"| {k} | {v} |" for k, v in summary["metrics"].items())
            create_markdown_artifact(f"| metric | value |\n|---|---|\n{body}", key=f"{key}-metrics")
    except Exception:  # noqa: BLE001 - an artifact is a courtesy; never fail a finished job for it
        pass
