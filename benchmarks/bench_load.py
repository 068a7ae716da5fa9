"""Load: a 10 000-item job through a tiny tensor stage, as a bare loop and as the Prefect flow.

    python -m benchmarks.bench_load [--items 10000] [--batch-sizes 200,1000] [--repeats 7] [--workers 2]

Same stage, same micro-batches, same results (checked), at each batch size:
~0.22 s of compute per batch at 200 items (50 tasks), ~1.1 s at 1000 (10
tasks, the size README's "Sizing batches" advises; the headline figure).
Loop and flow runs alternate (loop, flow, loop, ..., loop) and each flow is
compared with the mean of the loops around it (benchmarks.common.paired_ratios;
the median is reported), so drifting background load hits both sides alike.
Every run starts after a full garbage collection (outside its timing), so no
run pays for garbage the one before left. The flow runs with the CLI's
default of 2 workers, which a one-stage pipeline turns into one thread
(flows/run_job.py). CPU time of this process is shown too.
Memory: resident set size sampled every 20 ms during every run (loops too,
so the sampler costs both sides alike); the peaks of the flows and, beside
them, of the loops (the stage's own activations) against the size before
the first run. The server start and imports are warmed up first.
The loop runs in a fresh thread, as the flow's stage does
(benchmarks.common.in_fresh_thread says why; `--loop-thread main` shows the
difference, with the loop's page faults printed per run), and torch runs one
intra-op thread by default, so both sides compute alike.
The stage times its own `process` calls, which splits the flow's extra time
into orchestration (outside the stage) and a slower stage (contention for
the cores with the Prefect server and the orchestration thread).
Prints a table, then, last, {"load_overhead_ratio": flow/loop, "rss_growth_mb": ...}.
Goals: ratio ≤ 1.05; RSS growth bounded (tens of MB, not growing with the item count).
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import os
import resource
import statistics
import tempfile
import threading
import time

import torch

from benchmarks.common import Vector, in_fresh_thread, paired_ratios, print_json_line, print_table, wait_for_server_idle
from pipelines.graph import Pipeline
from stages.base import Stage, StageConfig
from stages.payloads import Text


class TinyEncoder(Stage):
    """Text -> 4 numbers through a small fixed random MLP over `tokens` pseudo-token vectors per item."""

    Input = Text
    Output = Vector
    kind = "tiny_encoder"

    class Config(StageConfig):
        width: int = 256
        layers: int = 4
        tokens: int = 16

    busy = 0.0  # seconds spent in `process`, to tell compute from orchestration

    def process(self, batch):
        start = time.perf_counter()
        c = self.config
        weights = _weights(c.width, c.layers)
        seeds = [int.from_bytes(hashlib.sha256(t.text.encode()).digest()[:4], "little") for t in batch]
        x = torch.stack([torch.randn(c.tokens, c.width, generator=torch.Generator().manual_seed(s)) for s in seeds])
        for w in weights:
            x = torch.tanh(x @ w)
        pooled = x.mean(1)[:, :4]
        out = [Vector(values=[round(v, 5) for v in row]) for row in pooled.tolist()]
        self.busy += time.perf_counter() - start
        return out


_cache: dict = {}


def _weights(width: int, layers: int) -> list[torch.Tensor]:
    key = (width, layers)
    if key not in _cache:  # made once per process, like a loaded model
        g = torch.Generator().manual_seed(0)
        _cache[key] = [torch.randn(width, width, generator=g) / width ** 0.5 for _ in range(layers)]
    return _cache[key]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Samples this process's RSS every 20 ms on a thread; `.peak` after exit."""

    def __enter__(self):
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--batch-sizes", default="200,1000",
                    help="micro-batch sizes to compare; the last one gives the headline load_overhead_ratio")
    ap.add_argument("--workers", type=int, default=2, help="flow task concurrency (the CLI default)")
    ap.add_argument("--tokens", type=int, default=16, help="pseudo-token vectors per item")
    ap.add_argument("--layers", type=int, default=32, help="work per item: MLP depth (small activations)")
    ap.add_argument("--repeats", type=int, default=7, help="flow runs per batch size, each between two loop runs")
    ap.add_argument("--loop-thread", choices=["fresh", "main"], default="fresh",
                    help="where the loop computes: a fresh thread like the flow's stage, or the main thread "
                         "(shows what glibc's main heap costs it)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="intra-op threads; 1 keeps the loop and the flow's single stage thread alike")
    args = ap.parse_args()
    from flows.run_job import run

    torch.set_num_threads(args.torch_threads)
    stage = TinyEncoder(tokens=args.tokens, layers=args.layers)
    items = [{"id": f"i{i}", "text": f"load item number {i}"} for i in range(args.items)]
    pipe = Pipeline.chain(stage, name="load")
    in_loop_thread = in_fresh_thread if args.loop_thread == "fresh" else (lambda fn: fn())
    rows, headline, per_size, notes, peaks, loop_peaks, loop_faults = [], {}, {}, [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        run(pipe, items[:400], out=tmp, job_id="warmup", batch_size=200,
            workers=args.workers)  # starts the server, warms imports and the stage: not timed
        wait_for_server_idle()
        rss_before = rss_mb()
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]

            def bare_loop() -> tuple[float, float, float, list]:
                gc.collect()  # no run pays for garbage left by the one before (outside the timing)
                faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                with PeakRss() as mem:  # sampled on both sides alike
                    wall, cpu, busy, outs = time.perf_counter(), time.process_time(), stage.busy, []
                    for batch in batches:
                        outs += [o.values for o in stage.run_batch([Text(text=it["text"]) for it in batch])]
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                loop_peaks.append(mem.peak)
                loop_faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults)
                return wall, cpu, stage.busy - busy, outs

            def flow(job_id: str) -> tuple[float, float, float]:
                gc.collect()
                busy = stage.busy
                with PeakRss() as mem:
                    wall, cpu = time.perf_counter(), time.process_time()
                    result = run(pipe, items, out=tmp, job_id=job_id, batch_size=batch_size, workers=args.workers)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                peaks.append(mem.peak)
                assert result.exit_code == 0 and [o["tiny_encoder"]["values"] for o in result.outputs] == ref, \
                    "the flow must compute exactly what the loop computes"
                wait_for_server_idle()  # the server's batched event writes must not land in the next loop
                return wall, cpu, stage.busy - busy

            *loop, ref = in_loop_thread(bare_loop)  # the flow computes in a worker thread too
            loops, flows_ = [loop], []
            for r in range(args.repeats):  # loop, flow, loop, flow, ... loop: background load hits both alike
                flows_.append(flow(f"load-b{batch_size}-{r}"))
                loops.append(in_loop_thread(bare_loop)[:3])
            row, headline, note = _summarise(batch_size, len(batches), loops, flows_)
            rows += row
            notes.append(f"{note}; loop page faults {', '.join(str(f) for f in loop_faults[-len(loops):])}")
            per_size[f"ratio_b{batch_size}"] = headline["load_overhead_ratio"]
            per_size[f"compute_ms_b{batch_size}"] = headline["compute_ms_per_batch"]
        rss_after = rss_mb()
    print_table(f"Load: {args.items} items through a tiny stage, {args.workers} workers, "
                f"torch threads {args.torch_threads}, loop in the {args.loop_thread} thread",
                ["way", "batches", "runs", "wall s (median)", "CPU s of this process", "ms / batch",
                 "flow / loop, paired: median (each run)"], rows)
    for note in notes:
        print(note)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS: {rss_before:.0f} MB before the runs; flow peaks {', '.join(f'{p:.0f}' for p in peaks)} MB; "
          f"loop peaks {', '.join(f'{p:.0f}' for p in loop_peaks)} MB; {rss_after:.0f} MB after; "
          f"max RSS of the process {max_rss:.0f} MB")
    # Growth over the size before the first run; the loop's shows what the stage's own activations take.
    print_json_line({"load_overhead_ratio": headline.pop("load_overhead_ratio"),
                     "rss_growth_mb": round(max(peaks) - rss_before, 1),
                     "loop_rss_growth_mb": round(max(loop_peaks) - rss_before, 1), "items": args.items,
                     **headline, **per_size,
                     "setup": {"items": args.items, "batch_sizes": [int(b) for b in args.batch_sizes.split(",")],
                               "workers": args.workers, "repeats": args.repeats, "torch_threads": args.torch_threads,
                               "loop_thread": args.loop_thread, "tokens": args.tokens, "layers": args.layers}})


def _summarise(batch_size: int, n: int, loops: list, flows_: list) -> tuple[list, dict, str]:
    """Table rows, figures and a line of single runs for one batch size."""
    t_loop, c_loop, s_loop = (statistics.median(x) for x in zip(*loops))
    t_flow, c_flow, s_flow = (statistics.median(x) for x in zip(*flows_))
    ratios = paired_ratios([w for w, _, _ in loops], [w for w, _, _ in flows_])
    rows = [[f"bare loop, batches of {batch_size}", n, len(loops), t_loop, c_loop, 1000 * t_loop / n, ""],
            [f"Prefect flow, batches of {batch_size}", n, len(flows_), t_flow, c_flow, 1000 * t_flow / n,
             f"{statistics.median(ratios):.3f} ({', '.join(f'{x:.3f}' for x in ratios)})"]]
    secs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    note = (f"batches of {batch_size}: loop walls {secs(w for w, _, _ in loops)} s (stage "
            f"{secs(b for _, _, b in loops)} s); flow walls {secs(w for w, _, _ in flows_)} s (stage "
            f"{secs(b for _, _, b in flows_)} s)")
    figures = {"load_overhead_ratio": round(statistics.median(ratios), 4), "batch_size": batch_size, "batches": n,
               "compute_ms_per_batch": round(1000 * s_loop / n, 1),
               "cpu_overhead_ratio": round(c_flow / c_loop, 4), "loop_s": round(t_loop, 3), "flow_s": round(t_flow, 3),
               "stage_s_loop": round(s_loop, 3), "stage_s_flow": round(s_flow, 3),
               "outside_stage_s_flow": round(t_flow - s_flow, 3),
               "overhead_ms_per_batch": round(1000 * (t_flow - t_loop) / n, 1),
               "ratio_of_medians": round(t_flow / t_loop, 4)}
    return rows, figures, note


if __name__ == "__main__":
    main()
