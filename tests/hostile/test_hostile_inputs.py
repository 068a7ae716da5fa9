"""Hostile inputs (issue 15, items 5, 7, 12, 18, 19): each bad input is one clear item error, a good
one next to it still runs, and nothing hangs, aborts the job or reads outside what the user named."""
from __future__ import annotations

import builtins
import hashlib
import io
import json
import logging
import os
import subprocess

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from flows.cli import app
from tests.audio_samples import tone
from tests.conftest import CASCADE

CLIPS = "tests.hostile.hostile_toys:clip_seconds"
UPPER = "tests.toy_pipelines:upper_split"


def cascade(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def results(job):
    return ({r["id"]: r for r in rows(job / "outputs.jsonl")}, {e["item_id"]: e for e in rows(job / "errors.jsonl")})


def wav(path, seconds, freq=440.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, freq=freq), 16000)
    return path


# -- item 5: ids from paths ---------------------------------------------------------------------

def test_files_of_the_same_name_in_two_folders_are_two_items(tmp_path):
    wav(tmp_path / "spk1" / "a.wav", 1.0)
    wav(tmp_path / "spk2" / "a.wav", 2.0)
    wav(tmp_path / "spk2" / "b.wav", 0.5)
    res = cascade("run", CLIPS, tmp_path / "spk1", tmp_path / "spk2", "--out", tmp_path / "runs", "--job-id", "j")
    assert res.exit_code == 0, res.output
    outputs, errors = results(tmp_path / "runs" / "j")
    assert errors == {}
    assert {i: o["clip_seconds"]["text"] for i, o in outputs.items()} == {
        "spk1/a": "1.00", "spk2/a": "2.00", "spk2/b": "0.50"}


def test_one_folder_keeps_bare_names_and_same_stems_keep_their_suffix(tmp_path):
    wav(tmp_path / "in" / "a.wav", 1.0)
    sf.write(tmp_path / "in" / "a.flac", tone(1.5), 16000)
    wav(tmp_path / "in" / "b.wav", 0.5)
    res = cascade("run", CLIPS, tmp_path / "in", "--out", tmp_path / "runs", "--job-id", "j")
    assert res.exit_code == 0, res.output
    outputs, _ = results(tmp_path / "runs" / "j")
    assert {i: o["clip_seconds"]["text"] for i, o in outputs.items()} == {"a.flac": "1.50", "a.wav": "1.00",
                                                                          "b": "0.50"}


def test_explicit_duplicate_ids_are_still_an_error(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "x", "text": "one"}\n{"id": "x", "text": "two"}\n')
    res = cascade("run", UPPER, tmp_path / "in.jsonl", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 3, res.output
    outputs, errors = results(tmp_path / "j")
    assert outputs["x"]["split"]["words"] == ["ONE"] and "duplicate item id" in errors["x"]["message"]


# -- item 7: FIFOs, devices, size cap ----------------------------------------------------------

def test_a_fifo_and_dev_zero_are_item_errors_not_hangs(tmp_path, cli_env):
    folder = tmp_path / "in"
    wav(folder / "ok.wav", 1.0)
    os.mkfifo(folder / "pipe.wav")
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "ok", "audio": "ok.wav"}, {"id": "fifo", "audio": "pipe.wav"}, {"id": "zero", "audio": "/dev/zero"}]))
    cmd = [*CASCADE, "run", CLIPS, str(folder), "--out", str(tmp_path / "runs"), "--job-id", "j"]
    # Before the fix this never returned: the timeout kills it and the test fails.
    proc = subprocess.run([*cmd, "--allow-outside-paths"], env=cli_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    outputs, errors = results(tmp_path / "runs" / "j")
    assert list(outputs) == ["ok"]
    assert "not a regular file (a FIFO)" in errors["fifo"]["message"]
    assert "not a regular file (a device)" in errors["zero"]["message"]
    assert errors["zero"]["stage"] == "input"


def test_files_over_the_size_cap_are_refused_without_reading_them(tmp_path, cli_env):
    wav(tmp_path / "in" / "small.wav", 0.01)
    wav(tmp_path / "in" / "big.wav", 1.0)
    env = {**cli_env, "CASCADE_MAX_INPUT_BYTES": "10000"}
    proc = subprocess.run([*CASCADE, "run", CLIPS, str(tmp_path / "in"), "--out", str(tmp_path), "--job-id", "j"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    outputs, errors = results(tmp_path / "j")
    assert list(outputs) == ["small"]
    assert "over the input size cap of 10000 bytes" in errors["big"]["message"]


# -- item 12: unreadable files and absurd nesting ----------------------------------------------

def test_an_unreadable_txt_is_one_input_error(tmp_path, monkeypatch):
    (tmp_path / "good.txt").write_text("the cat\n")
    locked = tmp_path / "locked.txt"
    locked.write_text("secret\n")
    real_open = builtins.open

    def open_as_nobody(file, *args, **kwargs):  # tests run as root, who can read anything
        if os.fspath(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_as_nobody)
    monkeypatch.setattr(io, "open", open_as_nobody)
    res = cascade("run", UPPER, tmp_path / "good.txt", locked, "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 3, res.output
    outputs, errors = results(tmp_path / "j")
    assert list(outputs) == ["good:1"]
    assert list(errors) == ["locked"] and "Permission denied" in errors["locked"]["message"]


def test_a_line_nested_200000_deep_is_one_input_error(tmp_path):
    deep = '{"id": "deep", "text": "x", "extra": ' + "[" * 200_000 + "]" * 200_000 + "}"
    (tmp_path / "in.jsonl").write_text('{"id": "ok", "text": "the cat"}\n' + deep + "\n")
    res = cascade("run", UPPER, tmp_path / "in.jsonl", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 3, res.output
    outputs, errors = results(tmp_path / "j")
    assert list(outputs) == ["ok"]
    assert "nested too deeply" in errors["in:2"]["message"]


# -- item 18: encodings ------------------------------------------------------------------------

def test_text_files_are_decoded_by_their_byte_order_mark(tmp_path):
    (tmp_path / "u16.txt").write_bytes("the cat\nthe dog\n".encode("utf-16"))  # with a BOM
    (tmp_path / "u32.txt").write_bytes("über\n".encode("utf-32"))
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "j", "text": "a bird"}).encode() + b"\n")
    res = cascade("run", UPPER, tmp_path / "u16.txt", tmp_path / "u32.txt", tmp_path / "bom.jsonl", "--out",
                  tmp_path / "runs", "--job-id", "j")
    assert res.exit_code == 0, res.output
    outputs, _ = results(tmp_path / "runs" / "j")
    assert {i: o["split"]["words"] for i, o in outputs.items()} == {
        "u16:1": ["THE", "CAT"], "u16:2": ["THE", "DOG"], "u32:1": ["ÜBER"], "j": ["A", "BIRD"]}


def test_nul_bytes_fail_their_line_instead_of_passing_as_text(tmp_path):
    (tmp_path / "noBOM.txt").write_bytes("the cat\nthe dog\n".encode("utf-16-le"))
    (tmp_path / "mixed.txt").write_bytes(b"fine line\nbad\x00line\n")
    res = cascade("run", UPPER, tmp_path / "noBOM.txt", tmp_path / "mixed.txt", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 3, res.output
    outputs, errors = results(tmp_path / "j")
    assert list(outputs) == ["mixed:1"]
    assert set(errors) == {"noBOM:1", "noBOM:2", "noBOM:3", "mixed:2"}  # the last holds one NUL
    assert all("NUL bytes" in e["message"] for e in errors.values())


# -- item 19: ids, notices, confinement, one-line usage errors ---------------------------------

def test_a_null_or_empty_id_is_an_error_not_the_string_none(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": null, "text": "a"}\n{"id": "", "text": "b"}\n'
                                       '{"id": 7, "text": "c"}\n{"id": true, "text": "d"}\n')
    res = cascade("run", UPPER, tmp_path / "in.jsonl", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 3, res.output
    outputs, errors = results(tmp_path / "j")
    assert list(outputs) == ["7"]  # an integer id is fine
    assert set(errors) == {"in:1", "in:2", "in:4"}
    assert "id must be a non-empty string or an integer, got null" in errors["in:1"]["message"]


def test_a_null_id_in_a_python_dict_is_an_error_too(tmp_path):
    from flows import run
    from pipelines.catalog import resolve

    result = run(resolve(UPPER), [{"id": None, "text": "a"}, {"id": "b", "text": "b"}], out=str(tmp_path),
                 job_id="j")
    assert [r["id"] for r in result.outputs] == ["b"]
    assert [(e["item_id"], e["kind"]) for e in result.errors] == [("#1", "invalid_input")]


def test_skipped_folder_entries_are_counted_at_the_start(tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("the cat\n")
    (tmp_path / "in" / "cover.png").write_bytes(b"\x89PNG")
    (tmp_path / "in" / "notes.md").write_text("#")
    (tmp_path / "in" / "sub").mkdir()
    with caplog.at_level(logging.WARNING, logger="flows.manifest"):
        res = cascade("run", UPPER, tmp_path / "in", "--out", tmp_path, "--job-id", "j")
    assert res.exit_code == 0, res.output
    [notice] = [r.getMessage() for r in caplog.records if r.name == "flows.manifest"]
    assert "skipped 3 entries that are not inputs (1 .md, 1 .png, 1 folder)" in notice


def test_manifest_paths_stay_inside_the_manifest_folder(tmp_path):
    secret = wav(tmp_path / "elsewhere" / "secret.wav", 1.0, freq=300.0)
    folder = tmp_path / "in"
    wav(folder / "ok.wav", 1.0)
    wav(folder / "sub" / "deep.wav", 0.5)
    (folder / "link.wav").symlink_to(secret)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "ok", "audio": "ok.wav"}, {"id": "deep", "audio": "sub/deep.wav"},
        {"id": "absolute", "audio": str(secret)}, {"id": "dotdot", "audio": "../elsewhere/secret.wav"},
        {"id": "link", "audio": "link.wav"}, {"id": "uri", "audio": f"file://{secret}"}]))
    res = cascade("run", CLIPS, folder, "--out", tmp_path / "runs", "--job-id", "j")
    assert res.exit_code == 3, res.output
    outputs, errors = results(tmp_path / "runs" / "j")
    assert sorted(outputs) == ["deep", "ok"]
    assert sorted(errors) == ["absolute", "dotdot", "link", "uri"]
    assert all("outside the folder" in e["message"] and "--allow-outside-paths" in e["message"]
               for e in errors.values())
    secret_digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    assert secret_digest not in (tmp_path / "runs" / "j" / "manifest.jsonl").read_text()

    res = cascade("run", CLIPS, folder, "--out", tmp_path / "runs", "--job-id", "k", "--allow-outside-paths")
    assert res.exit_code == 0, res.output
    outputs, _ = results(tmp_path / "runs" / "k")
    assert outputs["absolute"]["clip_seconds"]["text"] == outputs["dotdot"]["clip_seconds"]["text"] == "1.00"


def test_a_bad_stage_setting_is_one_usage_line(tmp_path):
    wav(tmp_path / "a.wav", 0.5)
    res = cascade("run", CLIPS, tmp_path / "a.wav", "--out", tmp_path, "--job-id", "j", "-p", "max_seconds=0")
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert "max_seconds" in lines[0] and "greater than 0" in lines[0] and "errors.pydantic.dev" not in lines[0]
