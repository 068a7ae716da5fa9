"""Crash and resume: SIGKILL a job mid-run, rerun with the same job id."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests.conftest import CASCADE

N_ITEMS, BATCH = 40, 4
N_BATCHES = N_ITEMS // BATCH


def _cmd(tmp_path, job_id, count):
    return [*CASCADE, "run", "tests.toy_pipelines:upper_split", str(tmp_path / "in.txt"), "--out", str(tmp_path),
            "--job-id", job_id, "--batch-size", str(BATCH), "-p", f"count_file={count}", "-p", "sleep=0.25"]


def _stored(job_dir):
    return {p.relative_to(job_dir).as_posix() for p in job_dir.glob("stages/*/*.jsonl")}


def test_sigkill_then_resume_gives_identical_outputs_without_recomputing(tmp_path, cli_env):
    (tmp_path / "in.txt").write_text("".join(f"line {i} of the input\n" for i in range(N_ITEMS)))
    count = tmp_path / "calls.txt"

    # The reference: one uninterrupted run.
    ref = subprocess.run(_cmd(tmp_path, "ref", tmp_path / "ref_calls.txt"), env=cli_env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    proc = subprocess.Popen(_cmd(tmp_path, "job", count), env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few batches (but not all) are stored
        if len(_stored(tmp_path / "job")) >= 6 if (tmp_path / "job").exists() else False:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _stored(tmp_path / "job")
    assert 6 <= len(done_before) < 2 * N_BATCHES, "the kill should land mid-run"
    assert not (tmp_path / "job" / "summary.json").exists()
    status = subprocess.run([*CASCADE, "status", str(tmp_path / "job")], env=cli_env, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0 and "stopped before the end" in status.stdout, status.stdout + status.stderr
    progress = json.loads((tmp_path / "job" / "progress.json").read_text())["stages"]
    assert sum(s["done"] for s in progress.values()) <= len(done_before)  # written at most once a second

    count.write_text("")
    again = subprocess.run(_cmd(tmp_path, "job", count), env=cli_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr

    assert (tmp_path / "job" / "outputs.jsonl").read_bytes() == (tmp_path / "ref" / "outputs.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in (tmp_path / "job" / "outputs.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == N_ITEMS  # every item exactly once
    # Only the batches that were not stored before the kill ran again.
    calls = count.read_text().splitlines()
    assert len(calls) == 2 * N_BATCHES - len(done_before)
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    reused = sum(s["cached_batches"] for s in summary["stages"].values())
    assert reused == len(done_before)
