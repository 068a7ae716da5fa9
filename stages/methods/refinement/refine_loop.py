"""The one iterative-refinement loop, shared by self-refine, deliberation, Mask-Predict and masked diffusion.

    state      one `ItemState` per input: current output, score, feedback, a
               private `memory` for the algorithm, and the trace so far
    step       `step(active_states, iteration)` updates the states it is given
               (iteration 0 makes the first output, later ones refine it)
    criterion  `criterion(state) -> bool`: this item is good enough
    cap        at most `max_iterations` steps per item (iterations 0 … cap-1)

After every step each item is checked on its own: it stops because of the
criterion, because its output did not change ("converged", when asked), or
because it reached the cap. A stopped item is never handed to a later step,
so it costs nothing more. Every iteration leaves a `RefineStep` in the trace,
which stage outputs carry so a job's outputs.jsonl shows how each item evolved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Literal, Protocol, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field

X = TypeVar("X")
StopReason = Literal["criterion", "cap", "converged"]
InfoValue = float | int | str | bool | None | list[float] | list[int] | list[str]


class RefineStep(BaseModel):
    """One iteration of one item, as persisted with the job's outputs."""

    model_config = ConfigDict(extra="forbid")

    iteration: int
    output: str
    score: float | None = None
    feedback: str | None = None
    info: dict[str, InfoValue] = Field(default_factory=dict, description="algorithm extras (masked count, ...)")


class RefineOutput(BaseModel):
    """Fields every refinement stage adds to its Output."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(0, description="steps this item took (trace length)")
    stopped_because: StopReason = "cap"
    trace: list[RefineStep] = Field(default_factory=list)


@dataclass
class ItemState(Generic[X]):
    index: int
    input: X
    output: str = ""
    score: float | None = None
    feedback: str | None = None
    done: bool = False  # set by a step when its own criterion holds (critic satisfied, nothing left to unmask)
    info: dict[str, Any] = field(default_factory=dict)  # extras for this iteration's trace entry
    memory: Any = None  # algorithm-private working data (tensors, drafts); never persisted
    trace: list[RefineStep] = field(default_factory=list)
    stopped_because: StopReason | None = None

    def result_fields(self) -> dict:
        """The RefineOutput fields of this item."""
        return {"iterations": len(self.trace), "stopped_because": self.stopped_because or "cap",
                "trace": list(self.trace)}


class Step(Protocol):
    def __call__(self, states: list[ItemState], iteration: int) -> None: ...


Criterion = Callable[[ItemState], bool]


def flagged_done(state: ItemState) -> bool:
    """The default criterion: the step itself said so."""
    return state.done


def score_at_least(threshold: float) -> Criterion:
    return lambda state: state.score is not None and state.score >= threshold


def refine_loop(inputs: Sequence[X], step: Step, max_iterations: int, criterion: Criterion = flagged_done,
                stop_when_unchanged: bool = False) -> list[ItemState[X]]:
    """Run `step` until every item has stopped; returns the final states in input order."""
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be ≥ 1, got {max_iterations}")
    states = [ItemState(i, x) for i, x in enumerate(inputs)]
    active = list(states)
    for iteration in range(max_iterations):
        if not active:
            break
        before = [s.output for s in active]
        for s in active:
            s.info = {}
        step(active, iteration)
        still = []
        for s, previous in zip(active, before):
            s.trace.append(RefineStep(iteration=iteration, output=s.output, score=s.score, feedback=s.feedback,
                                      info=_json_safe(s.info)))
            s.stopped_because = _stop_reason(s, previous, iteration, max_iterations, criterion, stop_when_unchanged)
            if s.stopped_because is None:
                still.append(s)
        active = still
    return states


def _stop_reason(state: ItemState, previous: str, iteration: int, max_iterations: int, criterion: Criterion,
                 stop_when_unchanged: bool) -> StopReason | None:
    if criterion(state):
        return "criterion"
    if stop_when_unchanged and iteration > 0 and state.output == previous:
        return "converged"
    if iteration + 1 >= max_iterations:
        return "cap"
    return None


def _json_safe(info: dict[str, Any]) -> dict[str, InfoValue]:
    out: dict[str, InfoValue] = {}
    for k, v in info.items():
        if hasattr(v, "tolist"):  # tensors and numpy values
            v = v.tolist()
        out[k] = v
    return out
