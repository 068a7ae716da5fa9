"""Crash, fault and OOM figures for docs/RESULTS.md.

    python -m experiments.results_faults [--trials 3] [--seed 0]

1. Crash: the speech-translation cascade over the 64 demo clips (batches of 8:
   16 stage × batch tasks) runs as `cascade run` in its own process group; it
   is SIGKILLed once a random number of batches is stored, then rerun with the
   same job id. Each trial checks: every item exactly once, outputs.jsonl
   byte-identical to an uninterrupted run, and the batches stored before the
   kill reused, not recomputed.
2. Faults: a stage failing 10 % of its calls at random (transient errors),
   1000 items in batches of 10: the job must complete; retries are counted.
3. Out of memory: a stage that cannot take more than 3 items per call, fed
   batches of 32: every batch is halved until it fits; calls are counted.

Prints a table, then one JSON line with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_json_line, print_table

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "assets" / "demo" / "test"
CASCADE = [str(Path(sys.executable).with_name("cascade"))]  # the installed entry point
BATCH = 8


def cascade_cmd(out: Path, job_id: str) -> list[str]:
    return [*CASCADE, "run", "speech-translation", str(CLIPS), "--target", "de", "--out", str(out),
            "--job-id", job_id, "--batch-size", str(BATCH), "--show", "0"]


def stored(job: Path) -> set[str]:
    return {p.relative_to(job).as_posix() for p in job.glob("stages/*/*.jsonl")}


def crash_trial(out: Path, job_id: str, kill_after: int, reference: bytes) -> dict:
    job = out / job_id
    proc = subprocess.Popen(cascade_cmd(out, job_id), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(stored(job)) < kill_after:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = stored(job)
    t = time.perf_counter()
    again = subprocess.run(cascade_cmd(out, job_id), capture_output=True, text=True, timeout=900)
    resume_s = time.perf_counter() - t
    summary = json.loads((job / "summary.json").read_text())
    ids = [json.loads(line)["id"] for line in (job / "outputs.jsonl").read_text().splitlines()]
    reused = sum(s["cached_batches"] for s in summary["stages"].values())
    tasks = sum(s["batches"] for s in summary["stages"].values())
    return {"stored_at_kill": len(before), "reused": reused, "recomputed": tasks - reused,
            "exit": again.returncode, "items": len(ids), "unique": len(set(ids)),
            "identical": (job / "outputs.jsonl").read_bytes() == reference, "resume_s": round(resume_s, 1)}


def crash_figures(trials: int, seed: int) -> tuple[list[dict], int]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ref = subprocess.run(cascade_cmd(out, "reference"), capture_output=True, text=True, timeout=900)
        if ref.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed:\n{ref.stderr[-2000:]}")
        reference = (out / "reference" / "outputs.jsonl").read_bytes()
        tasks = len(stored(out / "reference"))
        return [crash_trial(out, f"crash{i}", rng.randint(1, tasks - 2), reference) for i in range(trials)], tasks


def fault_figures() -> dict:
    from flows import run
    from pipelines import Pipeline
    from tests.fault_stages import Hungry, Unreliable, read_log

    fault_batch, oom_batch = 10, 32
    with tempfile.TemporaryDirectory() as tmp:
        items = [{"id": f"t{i}", "text": f"item {i}"} for i in range(1000)]
        log = Path(tmp) / "unreliable.jsonl"
        stage = Unreliable(failure_rate=0.1, seed=7, log=str(log), retries=6, retry_delay=0.01)
        res = run(Pipeline.chain(stage), items, out=tmp, job_id="faults", batch_size=fault_batch)
        calls = read_log(log)
        ok = [o["unreliable"]["text"] for o in res.outputs] == [it["text"][::-1] for it in items]
        faults = {"fault_items": len(items), "fault_calls": len(calls),
                  "fault_transient_failures": sum(c["failed"] for c in calls),
                  "fault_items_ok": res.summary["ok"], "fault_outputs_correct": ok}

        log = Path(tmp) / "hungry.jsonl"
        hungry = Hungry(max_items=3, log=str(log))
        res = run(Pipeline.chain(hungry), items[:256], out=tmp, job_id="oom", batch_size=oom_batch)
        sizes = [c["size"] for c in read_log(log)]
        oom = {"oom_items": 256, "oom_batches": 8, "oom_calls": len(sizes), "oom_failed_calls": sum(s > 3 for s in sizes),
               "oom_largest_ok_call": max(s for s in sizes if s <= 3), "oom_items_ok": res.summary["ok"]}
    setup = {"fault_rate": stage.config.failure_rate, "fault_retries": stage.config.retries, "fault_batch_size": fault_batch,
             "oom_max_items": hungry.config.max_items, "oom_batch_size": oom_batch}
    return faults | oom | {"setup": setup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    trials, tasks = crash_figures(args.trials, args.seed)
    print_table(f"SIGKILL mid-job, then rerun with the same job id (speech translation, 64 clips, {tasks} tasks)",
                ["trial", "stored at kill", "reused", "recomputed", "items once", "identical", "exit", "rerun s"],
                [[i, t["stored_at_kill"], t["reused"], t["recomputed"], f"{t['unique']}/{t['items']}",
                  t["identical"], t["exit"], t["resume_s"]] for i, t in enumerate(trials)])
    faults = fault_figures()
    setup = {"crash_clips": trials[0]["items"], "crash_batch_size": BATCH, "crash_tasks": tasks, **faults.pop("setup")}
    print_table("Transient faults and out-of-memory", ["figure", "value"], [[k, v] for k, v in faults.items()])
    print_json_line({
        "crash_trials": len(trials),
        "crash_identical": sum(t["identical"] and t["exit"] == 0 for t in trials),
        "crash_items_exactly_once": sum(t["items"] == t["unique"] == 64 for t in trials),
        "crash_stored_batches_recomputed": sum(t["stored_at_kill"] - t["reused"] for t in trials),
        **faults, "setup": setup,
    })


if __name__ == "__main__":
    main()
