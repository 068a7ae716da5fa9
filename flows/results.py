"""Gather a finished job's batches into its outputs, errors and summary files (see JobFolder)."""
from __future__ import annotations

from collections import defaultdict

from flows.job import Job
from flows.job_folder import JobFolder
from flows.metrics import METRICS
from flows.subtitles import write_subtitles


def collect(job: Job, stage_runs: dict[str, list[dict | None]], failures: dict[tuple[str, int], str],
            wall_seconds: float, subtitles: list[str] | None = None) -> dict:
    """`stage_runs[node][i]` is the summary of batch i (None when the task never finished).

    `subtitles` (formats, e.g. ["srt", "vtt"]): also write each item's subtitle files; the summary's
    "subtitles" maps item id -> their paths in the job folder.
    """
    store, pipe = job.store, job.pipeline
    outputs: dict[str, dict[str, dict]] = defaultdict(dict)   # node -> id -> output
    errors: dict[str, dict] = {}                              # id -> first error
    stats = {}
    for node in job.order:
        s = {"ok": 0, "failed": 0, "skipped": 0, "batches": len(job.batches), "cached_batches": 0,
             "seconds": 0.0}
        for index, run in enumerate(stage_runs.get(node, [])):
            if run is None:  # the task failed for good: report its items, keep going
                why = failures.get((node, index), "the batch task did not finish")
                for item_id in job.batches[index]:
                    if item_id not in errors:
                        errors[item_id] = {"item_id": item_id, "stage": node, "kind": "batch_failed",
                                           "message": why}
                        s["failed"] += 1
                    else:
                        s["skipped"] += 1
                continue
            s["cached_batches"] += run["cached"]
            s["seconds"] += run["seconds"]
            for row in store.read_batch(node, run["key"]):
                if "output" in row:
                    outputs[node][row["id"]] = row["output"]
                    s["ok"] += 1
                elif "error" in row:
                    errors.setdefault(row["id"], row["error"])
                    s["failed"] += 1
                else:
                    s["skipped"] += 1
        s["seconds"] = round(s["seconds"], 3)
        stats[node] = s

    sinks = set(pipe.sinks())
    order = job.order  # a topological sort: once, not once per item
    out_rows, err_rows = [], []
    for item_id, item in job.items.items():
        done = {n: outputs[n][item_id] for n in order if item_id in outputs[n]}
        if sinks.issubset(done):
            out_rows.append({"id": item_id, **done})
        else:
            err = errors.get(item_id) or {"item_id": item_id, "stage": "?", "kind": "incomplete",
                                          "message": "no output and no error recorded"}
            err_rows.append({**err, "partial": done})  # finished upstream work is kept
    err_rows = [e.model_dump() | {"partial": {}} for e in job.input_errors] + err_rows

    metrics = {}
    for m in pipe.metrics:
        pairs = [(outputs[m.node][i][m.field], item[m.reference]) for i, item in job.items.items()
                 if i in outputs[m.node] and isinstance(item.get(m.reference), str)]
        if pairs:
            metrics[m.name] = round(METRICS[m.name]([h for h, _ in pairs], [r for _, r in pairs]), 2)
            metrics[f"{m.name}_items"] = len(pairs)

    total = len(job.items) + len(job.input_errors)
    summary = {
        "job_id": job.job_id, "pipeline": pipe.name, "items": total, "ok": len(out_rows),
        "failed": len(err_rows), "stages": stats, "metrics": metrics,
        "wall_seconds": round(wall_seconds, 3), "batch_size": max(map(len, job.batches), default=0),
    }
    if subtitles:
        languages = {n: getattr(pipe.nodes[n].stage.config, "target_lang", None)
                     or getattr(pipe.nodes[n].stage.config, "language", None) for n in order}
        summary["subtitles"] = write_subtitles(store, out_rows, order, languages, subtitles)
    store.write_jsonl(JobFolder.OUTPUTS, out_rows)
    store.write_jsonl(JobFolder.ERRORS, err_rows)
    store.write_json(JobFolder.SUMMARY, summary)
    return summary
