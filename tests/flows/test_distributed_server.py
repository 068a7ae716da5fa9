"""A real Prefect server with a process worker: scheduled deployments, and a worker killed mid-job.

Everything runs in `cascade` subprocesses against a server of our own, so the
session's test harness is not touched.
"""
from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from tests.conftest import CASCADE
from tests.prefect_server import kill_flow_runs, running_server, start_group, stop_group, wait_for

pytestmark = pytest.mark.slow

PIPE = "tests.toy_pipelines:upper_split"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


@pytest.fixture
def worker(server, tmp_path):
    """`cascade worker` for a pool of this test, killed (with its flow runs) at the end."""
    pool = f"pool-{tmp_path.name[-12:]}".replace("_", "-")
    proc = start_group([*CASCADE, "worker", "--pool", pool], server, tmp_path / "worker.log")
    yield pool, proc
    stop_group(proc)
    kill_flow_runs(server)


def _cascade(args, env, timeout=240):
    proc = subprocess.run([*CASCADE, *args], env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def _lines(n, tag):
    return "".join(f"{tag} line {i} of the input\n" for i in range(n))


def _stored(job_dir):
    return {p.relative_to(job_dir).as_posix() for p in job_dir.glob("stages/*/*.jsonl")}


def _summary(job_dir):
    path = job_dir / "summary.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
        return None


def test_interval_deployment_runs_on_the_worker_like_a_local_run(server, worker, tmp_path):
    pool, _ = worker
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.txt").write_text(_lines(6, "a"))
    (data / "b.txt").write_text(_lines(4, "b"))
    calls = tmp_path / "calls.txt"

    ref = _cascade(["run", PIPE, str(data / "a.txt"), str(data / "b.txt"), "--out", str(tmp_path), "--job-id",
                    "ref", "--batch-size", "4"], server)
    assert ref.returncode == 0, ref.stderr
    made = _cascade(["deploy", PIPE, "--name", "nightly", "--pool", pool, "--interval", "3", "--inputs",
                     str(data / "*.txt"), "--out", str(tmp_path), "--batch-size", "4", "-p", f"count_file={calls}"],
                    server)
    assert made.returncode == 0, made.stdout + made.stderr
    job = tmp_path / "nightly"  # the job id comes from the deployment name
    wait_for(lambda: _summary(job), 120, "the first scheduled run")
    assert (job / "outputs.jsonl").read_bytes() == (tmp_path / "ref" / "outputs.jsonl").read_bytes()

    # New input (sorting first) arrives: the next scheduled run picks it up and reuses the old batches.
    calls.write_text("")
    (data / "0new.txt").write_text(_lines(3, "new"))
    summary = wait_for(lambda: (_summary(job) or {}).get("items") == 13 and _summary(job), 90,
                       "a run that saw the new file")
    assert summary["failed"] == 0
    # Old batches [4, 4, 2] -> [4, 4, 2+2, 1]: only the last two batches of each stage run again.
    assert len(calls.read_text().splitlines()) == 4
    rows = [json.loads(x) for x in (job / "outputs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows][-3:] == ["0new:1", "0new:2", "0new:3"]


def test_worker_killed_mid_job_then_resubmitted_resumes_exactly(server, worker, tmp_path):
    pool, proc = worker
    n_items, batch = 40, 4
    n_batches = n_items // batch
    (tmp_path / "in.txt").write_text(_lines(n_items, "kill"))
    calls = tmp_path / "calls.txt"
    args = ["--out", str(tmp_path), "--batch-size", str(batch), "-p", "sleep=0.25"]
    ref = _cascade(["run", PIPE, str(tmp_path / "in.txt"), "--job-id", "ref", *args], server)
    assert ref.returncode == 0, ref.stderr

    made = _cascade(["deploy", PIPE, "--name", "crashy", "--pool", pool, "--inputs", str(tmp_path / "in.txt"),
                     *args, "-p", f"count_file={calls}"], server)
    assert made.returncode == 0, made.stdout + made.stderr
    assert _cascade(["submit", "crashy"], server).returncode == 0
    job = tmp_path / "crashy"
    kill_after = random.Random(8).randint(3, 2 * n_batches - 6)  # a random point, reproducible
    wait_for(lambda: job.exists() and len(_stored(job)) >= kill_after, 150, f"{kill_after} stored batches")
    # A machine lost mid-job: the worker and the flow run it started. (Prefect starts flow runs in a
    # session of their own, so a worker killed alone leaves its run going on to the end.)
    stop_group(proc)
    kill_flow_runs(server)
    time.sleep(0.5)  # let the kernel finish them off before we look
    done_before = _stored(job)
    assert kill_after <= len(done_before) < 2 * n_batches, "the kill should land mid-run"
    assert _summary(job) is None

    calls.write_text("")
    again = start_group([*CASCADE, "worker", "--pool", pool], server, tmp_path / "worker2.log")
    try:
        rerun = _cascade(["submit", "crashy", "--wait", "--timeout", "200"], server, timeout=260)
    finally:
        stop_group(again)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (job / "outputs.jsonl").read_bytes() == (tmp_path / "ref" / "outputs.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in (job / "outputs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == n_items  # every item exactly once
    # Finished batches were not recomputed: only the rest ran.
    assert len(calls.read_text().splitlines()) == 2 * n_batches - len(done_before)
    assert sum(s["cached_batches"] for s in _summary(job)["stages"].values()) == len(done_before)
