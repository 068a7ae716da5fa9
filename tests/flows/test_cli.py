"""Command-line contract: exit codes and one-line messages for bad usage."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import CASCADE


def _run(args, env, timeout=120):
    return subprocess.run([*CASCADE, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    (["run", "no-such-pipeline", "README.md"], "unknown pipeline 'no-such-pipeline'"),
    (["run", "tests.toy_pipelines:upper_split", "missing.wav"], "input not found: missing.wav"),
    (["run", "tests.toy_pipelines:upper_split", "README.md", "--batch-size", "0"], "--batch-size must be ≥ 1"),
    (["run", "tests.toy_pipelines:upper_split", "README.md", "-p", "colour=red"], "no parameter 'colour'"),
    (["run", "tests.toy_pipelines:upper_split", "README.md", "--runner", "slurm"], "unknown runner 'slurm'"),
    (["run", "tests.no_module:x", "README.md"], "cannot import 'tests.no_module'"),
    (["status", "/nonexistent/job"], "not a job folder"),
])
def test_bad_usage_exits_2_with_one_line(args, needle, cli_env):
    proc = _run(args, cli_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_ok_then_status_and_list(tmp_path, cli_env):
    (tmp_path / "a.txt").write_text("one two\nthree\n")
    proc = _run(["run", "tests.toy_pipelines:upper_split", str(tmp_path / "a.txt"), "--out", str(tmp_path),
                 "--job-id", "ok"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "2/2 items ok" in proc.stdout and "ONE TWO" in proc.stdout
    proc = _run(["status", str(tmp_path / "ok")], cli_env)
    assert proc.returncode == 0 and "finished: 2/2 ok" in proc.stdout
    assert "1/1" in proc.stdout  # the one batch of each stage is done
    proc = _run(["list"], cli_env)
    assert proc.returncode == 0 and "speech-translation" in proc.stdout
