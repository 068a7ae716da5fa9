"""Reading traces back: quality per iteration, when items stopped, compute saved by stopping early.

Works on `RefineStep` objects or on the plain dicts of a job's outputs.jsonl.
An item that stopped at iteration k keeps its last output for every later
iteration, which is what a user of the stage would have received.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

Trace = Sequence[Any]  # RefineStep or dict


def _get(step: Any, key: str) -> Any:
    return step[key] if isinstance(step, dict) else getattr(step, key)


def output_at(trace: Trace, iteration: int) -> str:
    """The item's output after `iteration` (its final output when it had stopped before)."""
    if not trace:
        return ""
    best = trace[0]
    for step in trace:
        if _get(step, "iteration") <= iteration:
            best = step
    return _get(best, "output")


def outputs_by_iteration(traces: Sequence[Trace], max_iterations: int) -> list[list[str]]:
    """[iteration][item] -> output; score each row against references for a quality-per-iteration curve."""
    return [[output_at(t, it) for t in traces] for it in range(max_iterations)]


def stopped_at(traces: Sequence[Trace]) -> dict[int, float]:
    """Fraction of items whose last iteration was k."""
    if not traces:
        return {}
    counts = Counter(_get(t[-1], "iteration") for t in traces if t)
    return {k: counts[k] / len(traces) for k in sorted(counts)}


def compute_saved(traces: Sequence[Trace], max_iterations: int) -> float:
    """1 - item-steps run / item-steps if every item ran to the cap."""
    if not traces:
        return 0.0
    run = sum(len(t) for t in traces)
    return 1.0 - run / (len(traces) * max_iterations)
