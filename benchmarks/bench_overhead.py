"""Prefect overhead: the same two-stage pipeline over the same micro-batches,
(a) called in a plain Python loop, (b) run as the compiled Prefect flow (server already up).

    python -m benchmarks.bench_overhead [--items 4096] [--batch-sizes 16,64,256] [--repeats 7]

Runs alternate loop, flow, loop, ..., loop; each flow is compared with the
mean of the two loops around it (benchmarks.common.paired_ratios) and the
median of those ratios is reported. Every run starts after a full garbage
collection (outside its timing), so no run pays for garbage the one before
left. The flow runs with the CLI's default of 2 workers (at most one thread
per stage, so the two stages overlap) and writes every batch to the run
store; the loop does neither. The loop runs in a fresh thread, as the flow's
stages do (benchmarks.common.in_fresh_thread says why). torch uses its
default intra-op threads (all cores) on both sides, so every bit of
orchestration CPU, the Prefect server's included, comes out of the compute.
Prints a table and, last, {"overhead_ratio": ...} for the largest batch size,
with the ratio of every batch size and the flow's fixed cost per task.
Goal: ≤ 1.05.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

from benchmarks.common import (MatmulFeatures, VectorNorm, in_fresh_thread, paired_ratios,
                               prefect_server_cpu_seconds, print_json_line, print_table, wait_for_server_idle)
from pipelines.graph import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=4096)
    ap.add_argument("--batch-sizes", default="16,64,256",
                    help="micro-batch sizes to compare; the last one gives the headline overhead_ratio")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7, help="flow runs per batch size, each between two loops")
    ap.add_argument("--workers", type=int, default=2, help="flow task concurrency (the CLI default)")
    args = ap.parse_args()
    from flows.run_job import run

    stages = [MatmulFeatures(layers=args.layers), VectorNorm(layers=args.layers)]
    items = [{"id": f"i{i}", "text": f"item number {i} of the overhead benchmark"} for i in range(args.items)]
    rows, headline, per_size = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
            n, tasks = len(batches), 2 * len(batches)

            def plain_loop():
                outs = []
                for batch in batches:
                    x = [stages[0].Input(text=it["text"]) for it in batch]
                    outs += stages[1].run_batch(stages[0].run_batch(x))
                return [o.text for o in outs]

            def through_prefect(job):
                pipe = Pipeline.chain(*stages, name="overhead")
                res = run(pipe, items, out=tmp, job_id=job, batch_size=batch_size, workers=args.workers)
                return [o["norm"]["text"] for o in res.outputs]

            through_prefect(f"warmup{batch_size}")  # starts the server and warms imports: not timed
            wait_for_server_idle()
            ref = in_fresh_thread(plain_loop)
            loops, flows_, server_cpu = [], [], []

            def timed_loop():
                gc.collect()  # no run pays for garbage left by the one before (outside the timing)
                start = time.perf_counter()
                assert in_fresh_thread(plain_loop) == ref  # the flow's stages run in worker threads too
                loops.append(time.perf_counter() - start)

            timed_loop()
            for r in range(args.repeats):
                gc.collect()
                before, start = prefect_server_cpu_seconds(), time.perf_counter()
                got = through_prefect(f"b{batch_size}-timed{r}")
                flows_.append(time.perf_counter() - start)
                # The server records events in batches, up to seconds later: let it finish, so its work is
                # counted for this flow and does not slow the next loop down.
                wait_for_server_idle()
                server_cpu.append(prefect_server_cpu_seconds() - before)
                assert got == ref, "the flow must compute exactly what the loop computes"
                timed_loop()
            ratios = paired_ratios(loops, flows_)
            ratio = statistics.median(ratios)
            t_loop = statistics.median(loops)
            extra_ms = statistics.median(1000 * (f - (loops[i] + loops[i + 1]) / 2) / tasks
                                         for i, f in enumerate(flows_))
            rows += [[f"plain loop, batches of {batch_size}", n, 0, t_loop, 1000 * t_loop / n, "", "", ""],
                     [f"Prefect flow, batches of {batch_size}", n, tasks, statistics.median(flows_),
                      1000 * statistics.median(flows_) / n, statistics.median(server_cpu), round(extra_ms, 1),
                      f"{ratio:.3f} ({', '.join(f'{x:.3f}' for x in ratios)})"]]
            headline = {"overhead_ratio": round(ratio, 4), "batch_size": batch_size, "tasks": tasks,
                        "compute_ms_per_batch": round(1000 * t_loop / n, 1),
                        "extra_ms_per_task": round(extra_ms, 1),
                        "server_cpu_s_per_flow": round(statistics.median(server_cpu), 2)}
            per_size |= {f"ratio_b{batch_size}": round(ratio, 4), f"extra_ms_b{batch_size}": round(extra_ms, 1),
                         f"compute_ms_b{batch_size}": round(1000 * t_loop / n, 1)}
    print_table(f"Prefect overhead: {args.items} items, same stages, same micro-batches, {args.workers} workers",
                ["way", "batches", "tasks", "wall s (median)", "ms / batch", "server CPU s",
                 "extra ms / task", "flow / loop: median (each run)"], rows)
    setup = {"items": args.items, "batch_sizes": [int(b) for b in args.batch_sizes.split(",")],
             "repeats": args.repeats, "workers": args.workers, "layers": args.layers}
    print_json_line({**headline, **per_size, "setup": setup})


if __name__ == "__main__":
    main()
