"""Run one stage over one micro-batch, with resume. No Prefect in here.

The Prefect task in flows/job_flow.py is a thin wrapper around `run_stage_batch`,
so the same function serves threads, Ray workers and tests.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from pydantic import ValidationError

from stages.base import ConfigError, ItemError
from flows.job import load_job
from flows.store import batch_key

# One batch at a time per stage and process: a model is never run by two
# threads at once, while different stages still overlap (pipelining).
_node_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


def run_stage_batch(root: str, node: str, index: int, upstream: dict[str, str]) -> dict:
    """Process batch `index` of `node`, or reuse it if the store already holds its key.

    `upstream` maps each upstream node to the key of its result for this batch.
    Returns a small summary: key, counts, seconds, and whether it was cached.
    """
    job = load_job(root)
    pipe, store = job.pipeline, job.store
    stage = pipe.nodes[node].stage
    upstream_rows = {u: {r["id"]: r for r in store.read_batch(u, k)} for u, k in upstream.items()}

    rows: dict[str, dict] = {}
    valid: list[tuple[str, object, dict]] = []
    assemble, validate = pipe.input_assembler(node), stage.Input.model_validate
    for item_id in job.batches[index]:
        outputs = {u: recs.get(item_id, {}).get("output") for u, recs in upstream_rows.items()}
        failed_up = next((u for u, output in outputs.items() if output is None), None)
        if failed_up:
            rows[item_id] = {"id": item_id, "skipped": failed_up}
            continue
        record = assemble(job.items[item_id], outputs)
        try:
            valid.append((item_id, validate(record), record))
        except ValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            rows[item_id] = {"id": item_id, "error": ItemError(
                item_id=item_id, stage=node, kind="invalid_input", message=msg).model_dump()}

    digests = {i: job.items[i].get("_digests", {}) for i, _, _ in valid}
    key = batch_key(stage.fingerprint(), [(i, rec, digests[i]) for i, _, rec in valid] +
                    [(i, r.get("skipped") or r.get("error")) for i, r in rows.items()])
    stored = store.stored_batch(node, key, job.batches[index], stage.Output)
    if stored is not None:
        return _summary(key, stored, cached=True, seconds=0.0)

    start = time.perf_counter()
    if valid:
        try:
            with _node_locks[node]:
                results = stage.run_batch([inp for _, inp, _ in valid])
        except ConfigError as exc:  # e.g. the model cannot load: the job stops as one usage error
            return {"key": key, "config_error": str(exc), "cached": False, "seconds": 0.0}
        for (item_id, _, _), result in zip(valid, results):
            if isinstance(result, ItemError):
                err = result.model_copy(update={"item_id": item_id, "stage": node})
                rows[item_id] = {"id": item_id, "error": err.model_dump()}
            else:
                rows[item_id] = {"id": item_id, "output": result.model_dump(mode="json")}
    seconds = time.perf_counter() - start
    ordered = [rows[i] for i in job.batches[index]]
    store.write_batch(node, key, ordered)
    return _summary(key, ordered, cached=False, seconds=seconds)


def _summary(key: str, rows: list[dict], cached: bool, seconds: float) -> dict:
    return {
        "key": key, "cached": cached, "seconds": seconds,
        "ok": sum("output" in r for r in rows),
        "failed": sum("error" in r for r in rows),
        "skipped": sum("skipped" in r for r in rows),
    }
