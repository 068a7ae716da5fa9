"""Issue 15, items 8 and 13: the temporary server dies with `cascade run`; Ctrl-C is one line, exit 130, fast."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CASCADE

N_ITEMS, BATCH = 24, 4


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")  # one database for the module: migrated once


def _own_server_env(cli_env: dict, home: Path) -> dict:
    env = {k: v for k, v in cli_env.items() if k != "PREFECT_API_URL"}  # a run with no server of its own
    env["PREFECT_HOME"] = str(home)
    return env


def _cmd(tmp_path: Path, job: str) -> list[str]:
    return [*CASCADE, "run", "tests.toy_pipelines:upper_split", str(tmp_path / "in.txt"), "--out", str(tmp_path),
            "--job-id", job, "--batch-size", str(BATCH), "-p", "sleep=0.5"]


def _servers_of(pid: int) -> list[int]:
    """Pids of flows.embedded_server processes started by `pid` (its pid is their first argument)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flows.embedded_server" in args and str(pid).encode() in args:
            found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _wait_for_batches(job: Path, n: int, proc: subprocess.Popen, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if job.exists() and len(list(job.glob("stages/*/*.jsonl"))) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} stored batches in time (exit {proc.poll()})")


def test_sigkill_of_cascade_run_takes_its_temporary_server_with_it(tmp_path, cli_env, prefect_home):
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(N_ITEMS)))
    proc = subprocess.Popen(_cmd(tmp_path, "killed"), env=_own_server_env(cli_env, prefect_home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_batches(tmp_path / "killed", 1, proc)
    servers = _servers_of(proc.pid)
    assert servers, "the run should report to a temporary server of its own"
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(map(_alive, servers)):
        time.sleep(0.1)
    assert not any(map(_alive, servers)), "the temporary server outlived its parent"


def test_ctrl_c_prints_one_line_exits_130_within_2_s_and_the_rerun_resumes(tmp_path, cli_env, prefect_home):
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(N_ITEMS)))
    env = _own_server_env(cli_env, prefect_home)
    # A terminal's Ctrl-C signals the whole foreground process group: do the same.
    proc = subprocess.Popen(_cmd(tmp_path, "job"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    _wait_for_batches(tmp_path / "job", 2, proc)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - start
    assert proc.returncode == 130, (out, err)
    assert elapsed < 2.0, f"took {elapsed:.1f} s"
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and "--job-id job" in lines[0], lines

    again = subprocess.run(_cmd(tmp_path, "job"), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    outputs = (tmp_path / "job" / "outputs.jsonl").read_text().splitlines()
    assert len(outputs) == N_ITEMS
