"""The shared refinement loop: per-item stopping, no work for finished items, traces (also through a flow)."""
from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from flows import run
from pipelines import Pipeline
from stages.base import Stage
from stages.methods.refinement.refine_loop import RefineOutput, RefineStep, refine_loop, score_at_least
from stages.methods.refinement.refine_report import compute_saved, output_at, outputs_by_iteration, stopped_at


class CountDown:
    """Item x 'needs' x steps: output = 'x-k' after step k, done when k == x. Records batch sizes."""

    def __init__(self):
        self.seen: list[list[int]] = []

    def __call__(self, states, iteration):
        self.seen.append([s.input for s in states])
        for s in states:
            s.output = f"{s.input}-{iteration}"
            s.score = float(iteration)
            s.feedback = "ok" if iteration >= s.input else "more"
            s.done = iteration >= s.input
            s.info = {"k": iteration}


def test_items_stop_independently_on_criterion_and_cap():
    step = CountDown()
    states = refine_loop([0, 2, 5, 1], step, max_iterations=4)
    assert [s.stopped_because for s in states] == ["criterion", "criterion", "cap", "criterion"]
    assert [len(s.trace) for s in states] == [1, 3, 4, 2]
    assert [s.output for s in states] == ["0-0", "2-2", "5-3", "1-1"]
    # finished items are never handed to a later step
    assert step.seen == [[0, 2, 5, 1], [2, 5, 1], [2, 5], [5]]


def test_trace_holds_every_iteration():
    states = refine_loop([2], CountDown(), max_iterations=5)
    assert states[0].trace == [
        RefineStep(iteration=0, output="2-0", score=0.0, feedback="more", info={"k": 0}),
        RefineStep(iteration=1, output="2-1", score=1.0, feedback="more", info={"k": 1}),
        RefineStep(iteration=2, output="2-2", score=2.0, feedback="ok", info={"k": 2}),
    ]
    fields = RefineOutput(**states[0].result_fields())
    assert fields.iterations == 3 and fields.stopped_because == "criterion"


def test_custom_criterion_and_cap_of_one():
    step = CountDown()
    states = refine_loop([9, 9], step, max_iterations=10, criterion=score_at_least(2.0))
    assert [s.stopped_because for s in states] == ["criterion", "criterion"] and len(states[0].trace) == 3
    states = refine_loop([3], CountDown(), max_iterations=1)
    assert states[0].stopped_because == "cap" and len(states[0].trace) == 1
    with pytest.raises(ValueError):
        refine_loop([3], CountDown(), max_iterations=0)


def test_converged_when_output_repeats():
    def sticky(states, iteration):  # item x stops changing after x iterations
        for s in states:
            s.output = str(min(iteration, s.input))

    states = refine_loop([1, 3, 9], sticky, max_iterations=6, stop_when_unchanged=True)
    assert [s.stopped_because for s in states] == ["converged", "converged", "cap"]
    assert [len(s.trace) for s in states] == [3, 5, 6]
    states = refine_loop([1], sticky, max_iterations=6)  # off by default
    assert states[0].stopped_because == "cap"


def test_reports_per_iteration_and_compute_saved():
    states = refine_loop([0, 2, 5, 1], CountDown(), max_iterations=4)
    traces = [s.trace for s in states]
    assert output_at(traces[0], 3) == "0-0"  # stopped items keep their last output
    assert outputs_by_iteration(traces, 4)[1] == ["0-0", "2-1", "5-1", "1-1"]
    assert stopped_at(traces) == {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
    assert compute_saved(traces, 4) == pytest.approx(1 - 10 / 16)
    as_json = [[step.model_dump() for step in t] for t in traces]  # outputs.jsonl rows work too
    assert outputs_by_iteration(as_json, 4) == outputs_by_iteration(traces, 4)


class Need(BaseModel):
    need: int


class CountedStep(RefineOutput):
    text: str


class CountDownStage(Stage):
    Input = Need
    Output = CountedStep
    kind = "countdown"

    def process(self, batch):
        states = refine_loop([b.need for b in batch], CountDown(), max_iterations=3)
        return [CountedStep(text=s.output, **s.result_fields()) for s in states]


def test_traces_reach_outputs_jsonl_through_the_flow(tmp_path):
    items = [{"id": f"n{k}", "need": k} for k in (0, 1, 7)]
    result = run(Pipeline.chain(CountDownStage()), items, out=str(tmp_path), job_id="loop", batch_size=2)
    assert result.exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "loop" / "outputs.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r["countdown"] for r in rows}
    assert by_id["n0"]["stopped_because"] == "criterion" and by_id["n0"]["iterations"] == 1
    assert by_id["n7"]["stopped_because"] == "cap"
    assert [t["output"] for t in by_id["n7"]["trace"]] == ["7-0", "7-1", "7-2"]
    assert by_id["n1"]["trace"][1] == {"iteration": 1, "output": "1-1", "score": 1.0, "feedback": "ok",
                                       "info": {"k": 1}}
