"""Prefect overhead: the same two-stage pipeline over the same micro-batches,
(a) called in a plain Python loop, (b) run as the compiled Prefect flow (server already up).

    python -m benchmarks.bench_overhead [--items 1024] [--batch-size 32]

Prints a table and, last, {"overhead_ratio": b/a}. Goal: ≤ 1.05.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import flows  # noqa: F401  (Prefect defaults)
from benchmarks.common import (MatmulFeatures, VectorNorm, prefect_server_cpu_seconds, print_json_line,
                               print_table, timed, wait_for_server_idle)
from pipelines.graph import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=4096)
    ap.add_argument("--batch-sizes", default="16,64",
                    help="micro-batch sizes to compare; the last one gives the headline overhead_ratio")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="flow task concurrency (1 = same as the loop)")
    args = ap.parse_args()
    from flows.compile import run

    stages = [MatmulFeatures(layers=args.layers), VectorNorm(layers=args.layers)]
    items = [{"id": f"i{i}", "text": f"item number {i} of the overhead benchmark"} for i in range(args.items)]
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]

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
            plain_loop()
            loops, flows_, server_cpu = [], [], []
            for r in range(args.repeats):  # alternate, so background load hits both sides alike
                t, ref = timed(plain_loop)
                loops.append(t)
                before = prefect_server_cpu_seconds()
                t, got = timed(lambda: through_prefect(f"b{batch_size}-timed{r}"))
                flows_.append(t)
                # The server records events in batches, up to seconds later: let it finish, so its work is
                # counted for this flow and does not slow the next loop down.
                wait_for_server_idle()
                server_cpu.append(prefect_server_cpu_seconds() - before)
            assert got == ref, "the flow must compute exactly what the loop computes"
            t_loop, t_flow = statistics.median(loops), statistics.median(flows_)
            n = len(batches)
            rows += [[f"plain loop, batches of {batch_size}", args.items, n, 0, t_loop, 1000 * t_loop / n, "", ""],
                     [f"Prefect flow, batches of {batch_size}", args.items, n, 2 * n, t_flow, 1000 * t_flow / n,
                      statistics.median(server_cpu), round(t_flow / t_loop, 3)]]
            figures = {"overhead_ratio": round(t_flow / t_loop, 4), "loop_s": round(t_loop, 3),
                       "flow_s": round(t_flow, 3), "compute_ms_per_batch": round(1000 * t_loop / n, 1),
                       "server_cpu_s_per_flow": round(statistics.median(server_cpu), 2),
                       "tasks": 2 * n, **{k: v for k, v in figures.items() if k.startswith("ratio_b")},
                       f"ratio_b{batch_size}": round(t_flow / t_loop, 4)}
    print_table("Prefect overhead (same stages, same micro-batches)",
                ["way", "items", "batches", "tasks", "wall s", "ms / batch", "server CPU s", "ratio"], rows)
    print_json_line(figures)


if __name__ == "__main__":
    main()
