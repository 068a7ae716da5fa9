"""Hostile stored batches (issue 15, items 2 and 4): a batch file that is damaged or holds wrong-typed
rows is recomputed by the next run, and that run's outputs are the same as an undamaged job's."""
from __future__ import annotations

import json

import pytest

from flows import run
from tests.toy_pipelines import upper_split

TEXTS = [{"id": f"s{i}", "text": f"sentence number {i}"} for i in range(8)]


def batch_files(job, node):
    return sorted((job / "stages" / node).glob("*.jsonl"))


@pytest.fixture
def finished(tmp_path):
    """A finished job (2 batches per stage) and the outputs every later run must reproduce."""
    result = run(upper_split(), TEXTS, out=str(tmp_path), job_id="j", batch_size=4)
    assert result.exit_code == 0
    return tmp_path / "j", (tmp_path / "j" / "outputs.jsonl").read_bytes()


def _rerun(job):
    result = run(upper_split(), TEXTS, out=str(job.parent), job_id=job.name, batch_size=4)
    return result, (job / "outputs.jsonl").read_bytes()


def test_a_batch_emptied_or_cut_at_a_line_is_recomputed_in_one_rerun(finished):
    job, reference = finished
    first, second = batch_files(job, "upper")
    whole = first.read_bytes()
    first.write_bytes(b"")  # a power cut before the page cache reached the disk
    second.write_bytes(b"".join(second.read_bytes().splitlines(keepends=True)[:2]))  # cut at a line boundary
    result, outputs = _rerun(job)
    assert result.exit_code == 0, result.errors  # was 3: "incomplete: no output and no error recorded"
    assert outputs == reference
    assert first.read_bytes() == whole
    assert result.summary["stages"]["upper"]["cached_batches"] == 0
    assert result.summary["stages"]["split"]["cached_batches"] == 2


@pytest.mark.parametrize("bad_row", [
    {"output": {"text": 5}},                    # wrong type
    {"output": "SENTENCE NUMBER 0"},            # not an object
    {"output": {"text": "X", "colour": "red"}},  # a field the type does not have
    {},                                         # neither output nor error
    {"error": {"kind": "exception"}},           # an error without its message
])
def test_a_stored_row_of_the_wrong_type_recomputes_its_batch(finished, bad_row):
    job, reference = finished
    first = batch_files(job, "upper")[0]
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    first.write_text("".join(json.dumps(r) + "\n" for r in [{"id": rows[0]["id"], **bad_row}, *rows[1:]]))
    result, outputs = _rerun(job)
    assert result.exit_code == 0, result.errors
    assert outputs == reference
    assert json.loads(first.read_text().splitlines()[0]) == rows[0]


def test_a_stored_line_that_is_not_an_object_recomputes_its_batch(finished):
    job, reference = finished
    first = batch_files(job, "upper")[0]
    lines = first.read_text().splitlines(keepends=True)
    first.write_text('["s0", "SENTENCE NUMBER 0"]\n' + "".join(lines[1:]))
    result, outputs = _rerun(job)
    assert result.exit_code == 0 and outputs == reference


def test_a_wrong_typed_sink_row_does_not_reach_the_outputs(finished):
    job, reference = finished
    first = batch_files(job, "split")[0]
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    rows[0]["output"] = {"words": "SENTENCE NUMBER", "n": "2"}
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, outputs = _rerun(job)
    assert result.exit_code == 0 and outputs == reference


def test_a_hand_edited_row_of_the_right_type_is_reused(finished):
    job, _ = finished
    first = batch_files(job, "split")[0]
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    rows[0]["output"] = {"words": ["EDITED", "BY", "HAND"], "n": 3}
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    edited = rows[0]["id"]
    result, _ = _rerun(job)
    assert result.exit_code == 0
    assert {r["id"]: r for r in result.outputs}[edited]["split"] == {"words": ["EDITED", "BY", "HAND"], "n": 3}
    assert result.summary["stages"]["split"]["cached_batches"] == 2
