"""Shared pieces of the benchmarks: timing, tables, the JSON last line, a compute-bound stage."""
from __future__ import annotations

import functools
import hashlib
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import torch
from pydantic import BaseModel

from stages.base import Stage, StageConfig
from stages.payloads import Text

T = TypeVar("T")


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[float, object]:
    """Median wall time of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r])
    Console(width=200).print(table)  # wide enough for every column, terminal or not (make_results captures it)


def print_json_line(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


class Vector(BaseModel):
    values: list[float]


class MatmulFeatures(Stage):
    """Text -> a feature vector through a fixed random MLP: real, GIL-free tensor compute."""

    Input = Text
    Output = Vector
    kind = "features"

    class Config(StageConfig):
        width: int = 512
        layers: int = 8
        out_dim: int = 8

    def process(self, batch):
        c = self.config
        weights = _weights(0, c.width, c.layers)
        x = torch.stack([_text_vector(t.text, c.width) for t in batch])
        x = x.repeat(64, 1)  # 64 "tokens" per item, like a short sentence through a model
        for w in weights:
            x = torch.tanh(x @ w)
        pooled = x.view(64, len(batch), c.width).mean(0)[:, : c.out_dim]
        return [Vector(values=[round(v, 5) for v in row.tolist()]) for row in pooled]


class VectorNorm(Stage):
    """Vector -> text (its norm), after more tensor compute: the second stage of the chain."""

    Input = Vector
    Output = Text
    kind = "norm"

    class Config(StageConfig):
        width: int = 512
        layers: int = 8

    def process(self, batch):
        c = self.config
        w_in, *weights = _weights(1, c.width, c.layers + 1)
        x = torch.tensor([b.values for b in batch]).repeat(64, 1) @ w_in[: len(batch[0].values)]
        for w in weights:
            x = torch.tanh(x @ w)
        norms = x.view(64, len(batch), c.width).norm(dim=-1).mean(0)
        return [Text(text=f"{n:.4f}") for n in norms.tolist()]


@functools.lru_cache(maxsize=8)
def _weights(seed: int, width: int, layers: int) -> list[torch.Tensor]:
    """Fixed random weights, made once per process (like a loaded model)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(width, width, generator=g) / width ** 0.5 for _ in range(layers)]


def _text_vector(text: str, width: int) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


def interleaved_medians(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds per run; one round runs every entry once, so load changes on the shared CPU hit all alike."""
    for fn in runs.values():
        fn()  # warm-up: lazy init, allocator
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def prefect_server_cpu_seconds() -> float:
    """CPU time used so far by the local Prefect server processes (Linux /proc; 0 elsewhere).

    On a small machine the server shares the cores with the stages; this shows how much.
    """
    import glob
    import os

    total = 0.0
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{proc}/cmdline", "rb") as f:
                if b"prefect.server" not in f.read():
                    continue
            with open(f"{proc}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total


def wait_for_server_idle(timeout: float = 20.0, quiet_cpu_s: float = 0.02) -> None:
    """Wait until the local Prefect server has used less than `quiet_cpu_s` CPU in half a second."""
    deadline = time.monotonic() + timeout
    last = prefect_server_cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = prefect_server_cpu_seconds()
        if now - last < quiet_cpu_s:
            return
        last = now


def in_fresh_thread(fn: Callable[[], T]) -> T:
    """`fn()` run in a new thread, as the flow's task runner runs the stages.

    Comparing a loop in the main thread with a flow in worker threads measured
    glibc, not Prefect: the main thread's heap is trimmed back to the OS more
    eagerly, so at 16 MB activations the main thread's loop page-faults far
    more and the flow comes out faster than the loop (0.93 here;
    `python -m benchmarks.bench_load --batch-sizes 1000 --loop-thread main`
    prints the ratio and the loop's page faults per run).
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def paired_ratios(loops: list[float], flows: list[float]) -> list[float]:
    """Each flow's time over the mean of the loop runs just before and after it.

    Runs alternate loop, flow, loop, ..., loop (one more loop than flows). On a
    shared machine the speed drifts by several per cent within minutes; pairing
    each flow with its neighbours cancels the drift that medians of whole
    columns keep.
    """
    assert len(loops) == len(flows) + 1, "alternate: loop, flow, loop, ..., loop"
    return [f / ((loops[i] + loops[i + 1]) / 2) for i, f in enumerate(flows)]
