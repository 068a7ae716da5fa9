"""The job folder: a job id stays a plain name inside --out, a job never writes into its inputs,
an unwritable or full disk is one line, and a full disk mid-run leaves nothing half-written behind."""
from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.job_folder import JobFolder, JobFolderError, check_job_id

PIPE = "tests.toy_pipelines:upper_split"


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(res, needle):
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)


def _user_folder(tmp_path):
    """A user's input folder: a manifest of their own and the text it names."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.jsonl").write_text(json.dumps({"id": "u1", "text": "mine"}) + "\n")
    return data


@pytest.mark.parametrize("job_id", ["..", ".", ".hidden", "a/b", "../data", "x/../..", "~"])
def test_a_job_id_that_is_no_plain_name_is_refused_and_nothing_is_written(job_id, tmp_path):
    data = _user_folder(tmp_path)
    before = sorted(p.name for p in data.iterdir()), (data / "manifest.jsonl").read_bytes()
    res = _cli("run", PIPE, data, "--out", data / "runs", "--job-id", job_id)
    assert res.exit_code == 2
    _one_line(res, "job id")
    assert (sorted(p.name for p in data.iterdir()), (data / "manifest.jsonl").read_bytes()) == before


def test_a_job_folder_that_is_an_input_folder_is_refused(tmp_path):
    data = _user_folder(tmp_path)
    manifest = (data / "manifest.jsonl").read_bytes()
    res = _cli("run", PIPE, data, "--out", tmp_path, "--job-id", "data")
    assert res.exit_code == 2
    _one_line(res, "must not write into its inputs")
    assert (data / "manifest.jsonl").read_bytes() == manifest and not (data / "summary.json").exists()


def test_a_job_folder_symlinked_out_of_out_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "j").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(JobFolderError, match="outside --out"):
        JobFolder.for_job(str(out), "j")
    assert JobFolder.for_job(str(out), "j2").root == str(out.resolve() / "j2")
    assert check_job_id("nightly-2026.12_01") == "nightly-2026.12_01"


@pytest.mark.parametrize("out", ["/proc/x", "/dev/null/x"])
def test_an_unwritable_out_is_one_usage_line(out, tmp_path):
    (tmp_path / "a.txt").write_text("one\n")
    res = _cli("run", PIPE, tmp_path / "a.txt", "--out", out, "--job-id", "j")
    assert res.exit_code == 2
    _one_line(res, "cannot write the job folder")


def test_a_full_disk_before_the_start_is_one_usage_line(tmp_path, monkeypatch):
    from flows import job_folder

    (tmp_path / "a.txt").write_text("one\n")
    monkeypatch.setattr(job_folder.shutil, "disk_usage", lambda path: SimpleNamespace(free=4096))
    res = _cli("run", PIPE, tmp_path / "a.txt", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 2
    _one_line(res, "is full (4 KiB free): free some space first")
    assert not (tmp_path / "j" / "job.json").exists()


def test_a_disk_that_is_full_when_the_job_files_are_written_is_one_usage_line(tmp_path, monkeypatch):
    from flows import store as store_mod

    (tmp_path / "a.txt").write_text("one\n")
    monkeypatch.setattr(store_mod, "open", FillingDisk(batches=-1), raising=False)  # full from the first write
    res = _cli("run", PIPE, tmp_path / "a.txt", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 2
    _one_line(res, "cannot write the job folder")
    assert _temp_files(tmp_path / "j") == []


class FillingDisk:
    """`open` for flows.store: the disk fills up after `batches` stage-batch files.

    From then on every write fails with ENOSPC after creating its file, as a real full
    disk does: the half-written temp file stays behind.
    """

    def __init__(self, batches: int):
        self.left, self.full = batches, batches < 0

    def __call__(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode:
            if f"/{JobFolder.STAGES}/" in str(path) and not self.full:
                self.left -= 1
                self.full = self.left < 0
            if self.full:
                f.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return f


def _temp_files(folder):
    return [p for p in folder.rglob("*") if JobFolder.TEMP_MARK in p.name]


def test_a_disk_that_fills_mid_run_gives_one_line_and_the_rerun_resumes(tmp_path, monkeypatch):
    from flows import store as store_mod

    lines = "".join(f"line {i}\n" for i in range(12))
    (tmp_path / "in.txt").write_text(lines)
    ref = _cli("run", PIPE, tmp_path / "in.txt", "--out", tmp_path, "--job-id", "ref", "--batch-size", "2")
    assert ref.exit_code == 0, ref.output

    calls = tmp_path / "calls.txt"
    args = ["run", PIPE, tmp_path / "in.txt", "--out", tmp_path, "--job-id", "full", "--batch-size", "2",
            "-p", f"count_file={calls}"]
    monkeypatch.setattr(store_mod, "open", FillingDisk(batches=3), raising=False)
    res = _cli(*args)
    assert res.exit_code == 1
    _one_line(res, "no space left on the device")
    assert "free space on that disk, then rerun with --job-id full to resume" in res.output
    job = tmp_path / "full"
    assert _temp_files(job) == []  # the half-written files of the failed writes are gone
    stored = list(job.glob(f"{JobFolder.STAGES}/*/*.jsonl"))
    assert len(stored) == 3 and not (job / JobFolder.SUMMARY).exists()

    monkeypatch.undo()  # space freed
    calls.write_text("")
    again = _cli(*args)
    assert again.exit_code == 0, again.output
    assert (job / JobFolder.OUTPUTS).read_bytes() == (tmp_path / "ref" / JobFolder.OUTPUTS).read_bytes()
    summary = json.loads((job / JobFolder.SUMMARY).read_text())
    assert sum(s["cached_batches"] for s in summary["stages"].values()) == 3  # resumed, not redone
    assert len(calls.read_text().splitlines()) == 2 * 6 - 3


def test_leftover_temp_files_of_dead_writers_are_removed_when_the_job_runs_again(tmp_path):
    import socket

    (tmp_path / "a.txt").write_text("one\ntwo\n")
    assert _cli("run", PIPE, tmp_path / "a.txt", "--out", tmp_path, "--job-id", "j").exit_code == 0
    folder = tmp_path / "j" / JobFolder.STAGES / "upper"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    planted = {name: folder / f"k.jsonl{JobFolder.TEMP_MARK}{name}" for name in [
        f"{host}-{dead.pid}-0",          # this machine, its process is gone: removed
        f"{host}-{os.getppid()}-0",      # this machine, alive (our parent): another run may be writing it
        "other-box-1234-7",              # another machine, fresh: kept
        "old-box-1234-8",                # another machine, two hours old: removed
    ]}
    for path in planted.values():
        path.write_bytes(b'{"id": "half')
    two_hours_ago = os.path.getmtime(planted["old-box-1234-8"]) - 7200
    os.utime(planted["old-box-1234-8"], (two_hours_ago, two_hours_ago))

    assert _cli("run", PIPE, tmp_path / "a.txt", "--out", tmp_path, "--job-id", "j").exit_code == 0
    left = {p.name.rsplit(JobFolder.TEMP_MARK, 1)[1] for p in _temp_files(tmp_path / "j")}
    assert left == {f"{host}-{os.getppid()}-0", "other-box-1234-7"}
