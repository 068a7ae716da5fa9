"""`--runner ray` on a local Ray cluster reporting to a real Prefect server.

One Ray run checks three things: outputs byte-identical to the thread runner,
the model cache surviving between tasks in a Ray worker process, and a Ray
worker killed mid-task (the stage SIGKILLs its own process once) being retried.
"""
from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from flows import run
from tests.conftest import CASCADE
from tests.fault_stages import cached_then_upper, read_log
from tests.prefect_server import running_server

pytestmark = pytest.mark.slow

pytest.importorskip("prefect_ray")

PIPE = "tests.fault_stages:cached_then_upper"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


def _run(tmp_path, env, job_id, *extra):
    cmd = [*CASCADE, "run", PIPE, str(tmp_path / "in.txt"), "--out", str(tmp_path), "--job-id", job_id,
           "--batch-size", "2", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    return proc.pid, proc.returncode, out + err


def test_ray_runner_equals_local_keeps_the_model_cache_and_survives_a_lost_worker(server, tmp_path):
    (tmp_path / "in.txt").write_text("".join(f"ray item {i}\n" for i in range(12)))
    local = run(cached_then_upper(), [str(tmp_path / "in.txt")], out=str(tmp_path), job_id="local", batch_size=2)
    assert local.exit_code == 0  # the reference: threads, in this process

    log, marker = tmp_path / "events.jsonl", tmp_path / "died"
    # --workers 2: the local Ray cluster gets 2 CPUs, so at most two worker processes share 7 tasks.
    driver, code, text = _run(tmp_path, server, "ray", "--runner", "ray", "--workers", "2", "-p", f"log={log}",
                              "-p", f"die_once={marker}")
    assert code == 0, text
    assert marker.exists(), "one Ray worker should have died mid-task"

    assert (tmp_path / "ray" / "outputs.jsonl").read_bytes() == (tmp_path / "local" / "outputs.jsonl").read_bytes()
    events = read_log(log)
    calls = [e for e in events if e["event"] == "call"]
    loads = Counter(e["pid"] for e in events if e["event"] == "load")
    assert driver not in {e["pid"] for e in calls}, "stage work must run in Ray workers, not the driver"
    # 6 batches + the one whose worker died; every batch's items were computed.
    assert len(calls) == 7
    computed = Counter(t for c in calls for t in c["texts"])
    assert set(computed) == {f"ray item {i}" for i in range(12)} and sum(computed.values()) == 14
    assert set(loads.values()) == {1}, "each Ray worker process loads the model once"
    assert len(loads) < len(calls), "the model cache must be reused across tasks in one worker"
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["ok"] == 12 and summary["failed"] == 0
