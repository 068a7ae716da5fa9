"""Model merging as a Prefect flow: validate the config, merge, publish what was made.

The merged dir is an ordinary `from_pretrained` dir, so any model stage
(Translate, Generate, EnsembleTranslate members) can use it.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact


@task(name="merge-tensors", persist_result=False, retries=0)
def merge_task(config_path: str, out_dir: str, device: str, seed: int | None, overwrite: bool) -> str:
    from stages.methods.merging import run_merge

    return str(run_merge(config_path, out_dir, device=device, seed=seed, overwrite=overwrite))


@flow(name="merge-models", persist_result=False)
def merge_flow(config_path: str, out_dir: str, device: str = "auto", seed: int | None = None,
               overwrite: bool = False) -> dict:
    from stages.methods.merging import load_merge_config, plan_merge

    config = load_merge_config(config_path)  # every field checked before any tensor is read
    plan_merge(config)  # every model found, shapes agree: fail before the long part
    start = time.perf_counter()
    out = merge_task(config_path, out_dir, device, seed, overwrite)
    summary = {"method": config.merge_method, "models": len(config.models), "out_dir": out,
               "seconds": round(time.perf_counter() - start, 2),
               "files": sorted(p.name for p in Path(out).iterdir())}
    try:
        create_markdown_artifact(f"merged {summary['models']} models with `{summary['method']}` into `{out}` "
                                 f"in {summary['seconds']} s", key="merge-result")
    except Exception:  # noqa: BLE001 - an artifact is a courtesy
        pass
    return summary
