"""Model merging as a Prefect flow: validate the config, merge, publish what was made.

The merged dir is an ordinary `from_pretrained` dir, so any model stage
(Translate, Generate, EnsembleTranslate members) can use it.

A bad config or bad input data (a NaN tensor found mid-merge, say) is not a crash: the
task and the flow end in a Failed state whose message starts with REFUSED, with no
traceback, and `cascade merge` turns it into one usage-error line.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

REFUSED = "merge refused: "


def _refusal(exc: Exception):
    return Failed(message=REFUSED + " ".join(str(exc).split()))


@task(name="merge-tensors", persist_result=False, retries=0)
def merge_task(config_path: str, out_dir: str, device: str, seed: int | None, overwrite: bool):
    from stages.methods.merging import MergeError, run_merge

    try:
        return str(run_merge(config_path, out_dir, device=device, seed=seed, overwrite=overwrite))
    except MergeError as exc:
        return _refusal(exc)


@flow(name="merge-models", persist_result=False)
def merge_flow(config_path: str, out_dir: str, device: str = "auto", seed: int | None = None,
               overwrite: bool = False):
    from stages.methods.merging import MergeError, check_output_dir, load_merge_config, plan_merge

    try:
        check_output_dir(out_dir, overwrite)
        config = load_merge_config(config_path)  # every field checked before any tensor is read
        plan_merge(config).close()  # every model found, shapes agree: fail before the long part
    except MergeError as exc:
        return _refusal(exc)
    start = time.perf_counter()
    state = merge_task(config_path, out_dir, device, seed, overwrite, return_state=True)
    if state.is_failed():  # a refusal keeps its message; a crash re-raises here with its traceback
        return Failed(message=state.message) if (state.message or "").startswith(REFUSED) else state.result()
    out = state.result()
    summary = {"method": config.merge_method, "models": len(config.models), "out_dir": out,
               "seconds": round(time.perf_counter() - start, 2),
               "files": sorted(p.name for p in Path(out).iterdir())}
    try:
        create_markdown_artifact(f"merged {summary['models']} models with `{summary['method']}` into `{out}` "
                                 f"in {summary['seconds']} s", key="merge-result")
    except Exception:  # noqa: BLE001 - an artifact is a courtesy
        pass
    return summary


def _not_a_refusal(record: logging.LogRecord) -> bool:
    return not (record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) and REFUSED in record.getMessage())


@contextlib.contextmanager
def refusals_off_console() -> Iterator[None]:
    """Keep Prefect's 'Finished in state Failed(merge refused: ...)' lines off the console (the CLI
    prints the reason once); the server still gets them, its log handlers sit on other loggers."""
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(_not_a_refusal)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_not_a_refusal)
