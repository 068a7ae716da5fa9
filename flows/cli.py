"""The `cascade` command line.

Exit codes: 0 every item ok · 3 some items failed · 2 bad usage, config or
wiring (one-line message, no traceback) · 1 internal crash.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from flows import settings
from flows.job_folder import JobFolder

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Typed model cascades (speech → text → translation, ensembles, merges) as Prefect flows.")
console = Console(stderr=True)
out = Console()

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


@app.callback()
def _settings_first() -> None:
    settings.apply()  # before any command imports prefect or torch


def usage_error(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _user_modules_importable(pipeline: str) -> None:
    """`module:attribute` from the current folder, like `python -m`, but never ahead of installed packages.

    Only for such pipelines: a `whisper.py` lying in the folder must not replace the real whisper.
    """
    if ":" in pipeline and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def _parse_params(params: list[str]) -> dict[str, str]:
    parsed = {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key:
            usage_error(f"--param takes KEY=VALUE, got {p!r}")
        parsed[key] = value
    return parsed


@app.command()
def run(
    pipeline: str = typer.Argument(..., help="built-in name (see `cascade list`) or module:attribute"),
    inputs: List[str] = typer.Argument(..., help="audio/text files, folders (manifest.jsonl inside) or .jsonl"),
    out_dir: str = typer.Option("runs", "--out", help="folder or fsspec URI holding job folders"),
    job_id: Optional[str] = typer.Option(None, help="rerun with the same id to resume"),
    batch_size: int = typer.Option(16, help="items per micro-batch (one Prefect task per stage × batch)"),
    runner: str = typer.Option("local", help="local (threads), ray or dask"),
    workers: int = typer.Option(2, help="concurrent tasks: threads (local), CPUs of the Ray cluster it starts (ray)"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for --runner ray"),
    param: List[str] = typer.Option([], "--param", "-p", help="pipeline parameter KEY=VALUE (repeatable)"),
    target: Optional[str] = typer.Option(None, help="target language (same as -p target=LANG)"),
    show: int = typer.Option(5, help="example rows to print"),
    gpu_limit: Optional[str] = typer.Option(None, help="Prefect global concurrency limit each GPU-stage task "
                                            "occupies (e.g. gpu-POOL from `cascade worker`)"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="let Hugging Face models run the "
                                           "Python code their repository ships (auto_map); only for code you trust"),
    allow_outside_paths: bool = typer.Option(False, help="let a .jsonl name files outside its own folder"),
    subtitles: Optional[str] = typer.Option(None, help="also write subtitles per audio item: srt, vtt or srt,vtt "
                                            "(OUT/JOB_ID/subtitles/ITEM.LANG.FMT and ITEM.segments.json)"),
) -> None:
    """Run a pipeline over inputs as one Prefect flow; outputs land in OUT/JOB_ID."""
    from pydantic import ValidationError

    from pipelines.graph import WiringError
    from pipelines.catalog import PipelineNotFound, resolve
    from flows.job_folder import NoSpaceLeft
    from flows.manifest import InputError, describe_validation
    from flows.run_job import run as run_job
    from flows.runners import RunnerError
    from stages.base import ConfigError

    if batch_size < 1:
        usage_error(f"--batch-size must be ≥ 1, got {batch_size}")
    params = _parse_params(param)
    _user_modules_importable(pipeline)
    if target:
        params["target"] = target
    missing = [p for p in inputs if "://" not in p and not Path(p).exists()]
    if missing:
        usage_error(f"input not found: {missing[0]}")
    from flows.run_job import new_job_id

    job_id = job_id or new_job_id()
    interrupted = f"interrupted; finished batches are kept: rerun with --job-id {job_id} to resume"
    try:
        with _stop_at_once_on_ctrl_c(interrupted):
            pipe = resolve(pipeline, params)
            if trust_remote_code:
                pipe = apply_trust_remote_code(pipe)
            result = run_job(pipe, list(inputs), out=out_dir, job_id=job_id, batch_size=batch_size,
                             runner=runner, workers=workers, ray_address=ray_address,
                             show_progress=sys.stderr.isatty(), gpu_limit=gpu_limit,
                             allow_outside_paths=allow_outside_paths, subtitles=subtitles)
    except ValidationError as exc:  # a stage setting: one line naming the config, not pydantic's report
        usage_error(f"{exc.title}: {describe_validation(exc)}")
    except (PipelineNotFound, WiringError, InputError, RunnerError, ConfigError, ValueError) as exc:
        usage_error(str(exc))
    except NoSpaceLeft as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CRASH) from None
    _print_result(result, show)
    raise typer.Exit(result.exit_code)


@contextlib.contextmanager
def _stop_at_once_on_ctrl_c(message: str):
    """Ctrl-C: one line, exit 130, now. Unwinding Prefect's threads printed ~130 lines over ~7 s.

    Nothing is lost: every finished batch is already an atomically renamed file in the job folder, a
    half-written one is a temporary file the rerun removes, and the temporary server exits on its own.
    """
    import signal

    def stop(signum, frame):
        try:
            console.print(message, highlight=False, soft_wrap=True)
            sys.stderr.flush()
        finally:
            os._exit(130)

    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def apply_trust_remote_code(pipe):
    """Set trust_remote_code on every stage that has the setting (the user asked for it explicitly)."""
    for node in pipe.nodes.values():
        if "trust_remote_code" in type(node.stage.config).model_fields:
            node.stage.config = node.stage.config.model_copy(update={"trust_remote_code": True})
    return pipe


def _print_result(result, show: int) -> None:
    s = result.summary
    table = Table(title=f"{s['pipeline']} · job {s['job_id']}", show_lines=False)
    table.add_column("id", no_wrap=True)
    nodes = list(s["stages"])
    for n in nodes:
        table.add_column(n)
    for row in result.outputs[:show]:
        table.add_row(row["id"], *[_brief(row.get(n)) for n in nodes])
    if show and result.outputs:
        out.print(table)
    for err in result.errors[:show]:
        out.print(f"[yellow]failed[/yellow] {err['item_id']} at {err['stage']} ({err['kind']}): {err['message']}",
                  highlight=False)
    stages = ", ".join(f"{n} {v['ok']} ok/{v['failed']} failed ({v['seconds']:.1f}s, "
                       f"{v['cached_batches']}/{v['batches']} batches reused)" for n, v in s["stages"].items())
    out.print(f"{s['ok']}/{s['items']} items ok, {s['failed']} failed · {stages}", highlight=False)
    if s["metrics"]:
        out.print("metrics: " + ", ".join(f"{k}={v}" for k, v in s["metrics"].items()), highlight=False)
    out.print(f"outputs: {JobFolder(result.root).path(JobFolder.OUTPUTS)}", highlight=False)
    if s.get("subtitles"):
        n = sum(map(len, s["subtitles"].values()))
        out.print(f"subtitles: {n} files for {len(s['subtitles'])} items in "
                  f"{JobFolder(result.root).path(JobFolder.SUBTITLES)}", highlight=False)


def _brief(output: dict | None, width: int = 60) -> str:
    if output is None:
        return "—"
    text = output.get("text") if isinstance(output, dict) else None
    text = text if isinstance(text, str) else json.dumps(output, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def status(job_dir: str = typer.Argument(..., help="a job folder (OUT/JOB_ID) or its URI")) -> None:
    """Show a job's progress: finished batches per stage, or its summary when done."""
    from flows.store import RunStore

    if not JobFolder(job_dir).is_job():
        usage_error(f"{job_dir} is not a job folder (no {JobFolder.JOB})")
    store = RunStore(job_dir)
    meta = store.read_json(JobFolder.JOB)
    summary = store.read_json(JobFolder.SUMMARY) if store.exists(JobFolder.SUMMARY) else None
    progress = store.read_json(JobFolder.PROGRESS) if store.exists(JobFolder.PROGRESS) else {"stages": {}}
    table = Table(title=f"job {meta['job_id']} · {meta['pipeline']['name']}")
    for col in ("stage", "batches done", "reused", "failed batches", "items ok", "items failed"):
        table.add_column(col)
    for node in [n["name"] for n in meta["pipeline"]["nodes"]]:
        s = (summary or {}).get("stages", {}).get(node, {})
        n = len(meta["batches"])  # jobs from before progress.json: the summary's counts
        p = progress["stages"].get(node) or {"done": n if s else 0, "reused": s.get("cached_batches", 0),
                                             "failed": 0, "batches": n}
        table.add_row(node, f"{p['done']}/{p['batches']}", str(p["reused"]), str(p["failed"]),
                      str(s.get("ok", "—")), str(s.get("failed", "—")))
    out.print(table)
    if summary:
        out.print(f"finished: {summary['ok']}/{summary['items']} ok, {summary['failed']} failed; "
                  f"metrics {summary['metrics']}", highlight=False)
    else:
        out.print("running, or stopped before the end (rerun with the same --job-id to resume)")


@app.command("list")
def list_() -> None:
    """List the pipelines and stage kinds: built-in and from installed packages' entry points."""
    from pipelines.catalog import describe_pipelines
    from stages import STAGES, RegistryError

    try:
        pipelines, stages = describe_pipelines(), STAGES.load_all()
    except RegistryError as exc:
        usage_error(str(exc))
    table = Table(title="pipelines")
    table.add_column("name")
    table.add_column("what")
    for name, doc in pipelines:
        table.add_row(name, doc)
    out.print(table)
    table = Table(title="stages")
    for col in ("kind", "class", "input → output"):
        table.add_column(col)
    for kind, cls in stages.items():
        table.add_row(kind, f"{cls.__module__}.{cls.__name__}", f"{cls.Input.__name__} → {cls.Output.__name__}")
    out.print(table)


@app.command()
def server(
    port: int = typer.Option(4200, help="port to listen on"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 to serve other machines)"),
    ui: bool = typer.Option(False, help="serve Prefect's web UI too"),
) -> None:
    """Run a Prefect server (API for workers, deployments and Ray); prints the PREFECT_API_URL to export."""
    from flows.server import api_url, server_command, server_env

    out.print(f"export PREFECT_API_URL={api_url(host, port)}", highlight=False, soft_wrap=True)
    if ui:
        out.print(f"web UI: {api_url(host, port).removesuffix('/api')}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    cmd = server_command(host, port)
    os.execvpe(cmd[0], cmd, server_env(ui, host, port))  # the server is this process now: signals reach it directly


@app.command()
def worker(
    pool: str = typer.Option(..., "--pool", help="work pool to serve (created when missing)"),
    gpus: Optional[str] = typer.Option(None, help="GPU ids, e.g. 0,1: one worker per GPU; none = one CPU worker"),
    total_gpus: Optional[int] = typer.Option(None, help="set the pool's GPU limit to this many slots (all "
                                             "machines together); default: grow it to this machine's GPUs"),
    allow_cpu: bool = typer.Option(False, help="start --gpus workers even where those devices are missing "
                                   "(a warning, and jobs run on the CPU)"),
) -> None:
    """Start Prefect process workers for POOL, one per GPU, and the pool's GPU concurrency limit.

    Without --gpus: one CPU worker and no GPU limit (a limit would serialise every stage for nothing).
    """
    from flows.server import ServerError, ensure_gpu_limit, ensure_pool, gpu_limit_name, require_api
    from flows.workers import check_gpus, parse_gpus, supervise, worker_specs

    try:
        devices = parse_gpus(gpus)
        warning = check_gpus(devices, allow_cpu)
        require_api()
        ensure_pool(pool)
        name = gpu_limit_name(pool)
        slots = ensure_gpu_limit(name, total_gpus or len(devices), exact=total_gpus is not None) \
            if devices or total_gpus else 0
    except (ServerError, ValueError) as exc:
        usage_error(str(exc))
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    def echo(message: str) -> None:  # flushed: the log of a worker run in the background shows it now
        out.print(message, highlight=False, soft_wrap=True)
        sys.stdout.flush()

    echo(f"pool {pool}: GPU limit {name} = {slots} slot(s)" if slots else f"pool {pool}: CPU worker, no GPU limit")
    raise typer.Exit(supervise(worker_specs(pool, devices), echo=echo))


@app.command()
def deploy(
    pipeline: str = typer.Argument(..., help="built-in name or module:attribute"),
    name: str = typer.Option(..., "--name", help="deployment name; also gives the stable job id"),
    pool: str = typer.Option(..., "--pool", help="work pool whose workers run it"),
    inputs: List[str] = typer.Option([], "--inputs", help="glob of inputs, expanded at each run (repeatable)"),
    out_dir: str = typer.Option("runs", "--out", help="folder or fsspec URI holding the job folder"),
    cron: Optional[str] = typer.Option(None, help='cron schedule, e.g. "0 2 * * *"'),
    interval: Optional[float] = typer.Option(None, help="run every this many seconds"),
    param: List[str] = typer.Option([], "--param", "-p", help="pipeline parameter KEY=VALUE (repeatable)"),
    batch_size: int = typer.Option(16, help="items per micro-batch"),
    runner: str = typer.Option("local", help="task runner inside each run: local, ray or dask"),
    workers: int = typer.Option(2, help="concurrent tasks for the local runner"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for --runner ray"),
    gpu_limit: str = typer.Option("auto", help="concurrency limit for GPU stages: auto (gpu-POOL if it "
                                  "exists), none, or a name"),
    job_id: Optional[str] = typer.Option(None, help="job id (default: from --name)"),
) -> None:
    """Create a scheduled deployment that runs PIPELINE over the inputs (resuming one job each time)."""
    from pipelines.graph import WiringError
    from pipelines.catalog import PipelineNotFound, resolve
    from flows.deploy import deploy as make_deployment
    from flows.server import ServerError, require_api

    if batch_size < 1:
        usage_error(f"--batch-size must be ≥ 1, got {batch_size}")
    if not inputs:
        usage_error("give at least one --inputs GLOB")
    params = _parse_params(param)
    _user_modules_importable(pipeline)
    try:
        require_api()
        resolve(pipeline, params)  # wiring and parameter errors now, not at 2 a.m.
        made = make_deployment(pipeline, name, pool, inputs=list(inputs), out=out_dir, params=params, cron=cron,
                               interval=interval, batch_size=batch_size, runner=runner, workers=workers,
                               ray_address=ray_address, gpu_limit=gpu_limit, job_id=job_id)
    except (ServerError, PipelineNotFound, WiringError, ValueError) as exc:
        usage_error(str(exc))
    when = f"cron {cron!r}" if cron else f"every {interval:g} s" if interval else "on demand (`cascade submit`)"
    out.print(f"deployment {name} on pool {pool}: {when}; job {made['out']}/{made['job_id']}; "
              f"GPU limit {made['gpu_limit'] or 'none'}", highlight=False, soft_wrap=True)


@app.command()
def submit(
    name: str = typer.Argument(..., help="deployment name (from `cascade deploy --name`)"),
    wait: bool = typer.Option(False, help="wait for the run to end; exit 0 / 3 like `cascade run`"),
    timeout: Optional[float] = typer.Option(None, help="with --wait: give up after this many seconds"),
    cancel_on_timeout: bool = typer.Option(False, help="with --timeout: cancel the run when it has not "
                                           "finished in time"),
) -> None:
    """Run a deployment now."""
    from prefect.exceptions import ObjectNotFound

    from flows.deploy import cancel_run, submit as run_now, summary_of
    from flows.server import ServerError, require_api

    try:
        require_api()
        flow_run = run_now(name, wait=wait, timeout=timeout)
    except ServerError as exc:
        usage_error(str(exc))
    except ObjectNotFound:
        usage_error(f"no deployment named {name!r} (see `prefect deployment ls`)")
    state = flow_run.state
    out.print(f"flow run {flow_run.name} ({flow_run.id}): {state.name if state else '?'}", highlight=False)
    if not wait:
        return
    said = f"{state.name}" + (f" ({state.message})" if state and state.message else "") if state else "no state"
    if not (state and state.is_final()):
        if cancel_on_timeout:
            cancel_run(flow_run.id)
            what = "cancelled it"
        else:
            what = f"it goes on; to stop it: prefect flow-run cancel {flow_run.id}"
        console.print(f"[red]the run did not finish within {timeout or 0:g} s:[/red] it is {said}; {what}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CRASH)
    if not state.is_completed():
        console.print(f"[red]the run did not complete:[/red] it ended {said}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CRASH)
    summary = summary_of(flow_run) or {"ok": 0, "items": 0, "failed": 0}
    out.print(f"{summary['ok']}/{summary['items']} items ok, {summary['failed']} failed", highlight=False)
    raise typer.Exit(EXIT_OK if summary["failed"] == 0 else EXIT_PARTIAL)


@app.command()
def merge(
    config: str = typer.Argument(..., help="mergekit-style YAML (models, merge_method, base_model, parameters)"),
    out_dir: str = typer.Argument(..., help="new folder for the merged model (from_pretrained-loadable)"),
    device: str = typer.Option("auto", help="auto (cuda when present), cpu or cuda"),
    seed: Optional[int] = typer.Option(None, help="seed for DARE's random drop"),
    overwrite: bool = typer.Option(False, help="replace a non-empty OUT_DIR"),
) -> None:
    """Merge models (linear, soups, task arithmetic, TIES, DARE, SLERP) as a Prefect flow."""
    from stages.methods.merging import MergeError, check_output_dir, load_merge_config, plan_merge

    if not Path(config).exists():
        usage_error(f"merge config not found: {config}")
    try:  # the output dir, the config and every model's headers, before a flow run exists
        check_output_dir(out_dir, overwrite)
        plan_merge(load_merge_config(config)).close()
    except MergeError as exc:
        usage_error(" ".join(str(exc).split()))
    from flows.merge_flow import REFUSED, merge_flow, refusals_off_console

    with refusals_off_console():
        state = merge_flow(config, out_dir, device, seed, overwrite, return_state=True)
    message = state.message or ""
    if state.is_failed() and message.startswith(REFUSED):  # bad data found mid-merge, e.g. a NaN tensor
        usage_error(message.removeprefix(REFUSED))
    summary = state.result()  # anything else is a crash: raises with its traceback (exit 1)
    out.print(f"merged {summary['models']} models with {summary['method']} into {summary['out_dir']} "
              f"in {summary['seconds']} s", highlight=False)


def _recipe_list() -> str:
    from stages.training.recipe_table import RECIPES

    return "\n\n".join(f"{name}: {row.summary}" for name, row in RECIPES.items())


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


@app.command(help="Train models on your data with a recipe; a rerun with the same --out resumes.\n\n"
                  "Recipes:\n\n" + _recipe_list())
def train(
    recipe: str = typer.Argument(..., help="recipe name (listed above)"),
    data: str = typer.Option(..., "--data", help="training pairs: .jsonl, .tsv or a saved HF dataset dir"),
    model: str = typer.Option(..., "--model", help="start: model dir or hub name, or a config+tokenizer dir"),
    out_dir: str = typer.Option(..., "--out", help="output folder (checkpoints inside; rerun to resume)"),
    steps: Optional[int] = typer.Option(None, help="optimizer steps"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate (warmup, then cosine)"),
    batch_size: Optional[int] = typer.Option(None, help="examples per step"),
    warmup: Optional[int] = typer.Option(None, help="linear warmup steps"),
    seed: Optional[int] = typer.Option(None, help="seed of init, batch order and masking"),
    save_every: Optional[int] = typer.Option(None, help="write checkpoint-STEP folders every this many steps"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate on --dev every this many steps"),
    dev: Optional[str] = typer.Option(None, help="held-out pairs for the eval hook"),
    max_minutes: Optional[float] = typer.Option(None, help="stop after this long"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda"),
    resume: bool = typer.Option(True, help="continue from the newest checkpoint in --out"),
    param: List[str] = typer.Option([], "--param", "-p", help="recipe option KEY=VALUE (repeatable)"),
) -> None:
    from pydantic import ValidationError

    from stages.training.recipe_table import UnknownRecipe, check_data, recipe as find_recipe
    from stages.training.train_data import DataError

    given = {"data": data, "model": model, "out": out_dir, "steps": steps, "lr": lr, "batch_size": batch_size,
             "warmup": warmup, "seed": seed, "save_every": save_every, "eval_every": eval_every, "dev": dev,
             "max_minutes": max_minutes, "threads": threads, "device": device, "resume": resume}
    params = _parse_params(param)
    clash = sorted(set(params) & {k for k, v in given.items() if v is not None})
    if clash:
        usage_error(f"-p {clash[0]}=... repeats an option; give it once")
    options = {**{k: v for k, v in given.items() if v is not None}, **params}
    try:  # every option checked before any model is loaded
        options_cls, _ = find_recipe(recipe)
        checked = options_cls(**options)
        check_data(recipe, checked)
    except (UnknownRecipe, ValidationError, DataError) as exc:
        usage_error(f"train {recipe}: {_one_line(exc)}")
    from transformers.utils import logging as hf_logging

    from flows.train_flow import train_flow

    hf_logging.disable_progress_bar()  # per-save shard bars would bury the step lines
    try:
        summary = train_flow(recipe, checked.model_dump(mode="json"), show_progress=sys.stderr.isatty())
    except (DataError, ValueError) as exc:
        usage_error(f"train {recipe}: {_one_line(exc)}")
    steps_done = summary.get("steps", "")
    out.print(f"trained {recipe}{f' for {steps_done} steps' if steps_done else ''} into {checked.out}",
              highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
