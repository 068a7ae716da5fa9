"""Failure handling: OOM halving, random transient failures, atomic writes, the GPU concurrency limit."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

from flows import run
from pipelines import Pipeline
from tests.conftest import ROOT
from tests.fault_stages import GpuSleeper, Hungry, Unreliable, read_log

TEXTS = [{"id": f"t{i}", "text": f"item {i}"} for i in range(10)]


def test_oom_halves_the_batch_until_it_fits_and_every_item_completes(tmp_path):
    log = tmp_path / "calls.jsonl"
    result = run(Pipeline.chain(Hungry(max_items=3, log=str(log))), TEXTS, out=str(tmp_path), job_id="oom",
                 batch_size=10)
    assert result.exit_code == 0 and result.errors == []
    assert [o["hungry"]["text"] for o in result.outputs] == [t["text"].upper() for t in TEXTS]
    # By hand: 10 fails -> 5 fails -> 2 ok, 3 ok -> 5 fails -> 2 ok, 3 ok.
    assert [c["size"] for c in read_log(log)] == [10, 5, 2, 3, 5, 2, 3]
    calls = read_log(log)
    assert calls[2]["texts"] + calls[3]["texts"] + calls[5]["texts"] + calls[6]["texts"] == \
        [t["text"] for t in TEXTS]


def test_an_item_that_never_fits_fails_alone_as_oom(tmp_path):
    texts = TEXTS[:4] + [{"id": "big", "text": "a huge item"}] + TEXTS[4:7]
    result = run(Pipeline.chain(Hungry(max_items=8)), texts, out=str(tmp_path), job_id="huge", batch_size=8)
    assert result.exit_code == 3
    assert [(e["item_id"], e["kind"]) for e in result.errors] == [("big", "oom")]
    assert "MemoryError" in result.errors[0]["message"]
    assert [o["id"] for o in result.outputs] == [t["id"] for t in texts if t["id"] != "big"]


def test_ten_percent_random_transient_failures_still_complete_the_job(tmp_path):
    log = tmp_path / "calls.jsonl"
    items = [{"id": f"r{i}", "text": f"random {i}"} for i in range(120)]
    stage = Unreliable(failure_rate=0.1, seed=7, log=str(log), retries=4, retry_delay=0)
    result = run(Pipeline.chain(stage), items, out=str(tmp_path), job_id="rnd", batch_size=4)
    assert result.exit_code == 0, result.errors
    assert [o["unreliable"]["text"] for o in result.outputs] == [t["text"][::-1] for t in items]
    calls = read_log(log)
    failed = [c for c in calls if c["failed"]]
    assert failed, "the seed should make some calls fail"
    assert len(calls) == 30 + len(failed)  # each batch succeeded exactly once
    done = [t for c in calls if not c["failed"] for t in c["ids"]]
    assert sorted(done) == sorted(t["text"] for t in items)  # every item exactly once


_KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from flows.store import RunStore
    store = RunStore({job!r})
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # die with the bytes written, before the rename
    store.write_jsonl("stages/up/k.jsonl", [{{"id": "a", "output": {{"text": "NEW"}}}}] * 1000)
""")


def test_a_write_killed_midway_leaves_no_visible_partial_file(tmp_path):
    from flows.store import RunStore
    from stages.payloads import Text

    store = RunStore(str(tmp_path / "job"))
    script = _KILLED_WRITE.format(root=str(ROOT), job=str(tmp_path / "job"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert store.stored_batch("up", "k", ["a"] * 1000, Text) is None  # a rerun recomputes it, never reads half
    assert list((tmp_path / "job" / "stages" / "up").glob("*.jsonl")) == []

    store.write_batch("up", "k", [{"id": "a", "output": {"text": "OLD"}}])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert store.read_batch("up", "k") == [{"id": "a", "output": {"text": "OLD"}}]  # the old file, whole


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # ends sort first
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("limit", [None, 2])
def test_gpu_limit_caps_concurrent_gpu_stage_tasks(tmp_path, limit):
    from flows.server import ensure_gpu_limit

    log = tmp_path / "spans.jsonl"
    name = None
    if limit:
        name = f"gpu-test-{uuid.uuid4().hex[:8]}"
        assert ensure_gpu_limit(name, limit) == limit
    # One batch of a stage runs at a time per process, so overlap comes from four parallel GPU nodes.
    pipe = Pipeline("four-gpu-stages")
    for n in range(4):
        pipe.add(f"g{n}", GpuSleeper(sleep=0.4, log=str(log)))
    items = [{"id": f"g{i}", "text": f"gpu item {i}"} for i in range(3)]
    result = run(pipe, items, out=str(tmp_path), job_id="gpu", batch_size=1, workers=4, gpu_limit=name)
    assert result.exit_code == 0
    spans = [(r["start"], r["end"]) for r in read_log(log)]
    assert len(spans) == 12
    if limit:
        assert _max_overlap(spans) == 2  # never more than the limit, and the limit is used
    else:
        assert _max_overlap(spans) > 2  # the control: without the limit, 4 threads do overlap


def test_a_missing_gpu_limit_is_a_usage_error_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run(Pipeline.chain(GpuSleeper()), TEXTS, out=str(tmp_path), job_id="x", gpu_limit="gpu-no-such-pool")
    assert not (tmp_path / "x").exists()


def test_max_overlap_helper():
    assert _max_overlap([(0, 1), (1, 2)]) == 1
    assert _max_overlap([(0, 2), (1, 3), (1.5, 4)]) == 3
