"""`cascade run` never imports modules from the working folder in place of installed packages."""
from __future__ import annotations

import subprocess

from tests.conftest import CASCADE

PLANTED = ("whisper", "transformers", "soundfile", "safetensors")


def _plant(folder):
    for name in PLANTED:  # each leaves a marker when imported, then fails like a broken module would
        (folder / f"{name}.py").write_text(
            f"import pathlib\npathlib.Path(__file__).with_name('IMPORTED-{name}').touch()\n"
            f"raise ImportError('planted {name}')\n")


def _markers(folder):
    return sorted(p.name for p in folder.glob("IMPORTED-*"))


def test_modules_planted_in_the_working_folder_are_not_imported(tmp_path, cli_env, tiny_whisper, tiny_marian,
                                                                audio_dir):
    work = tmp_path / "work"
    work.mkdir()
    _plant(work)
    proc = subprocess.run([*CASCADE, "run", "speech-translation", str(audio_dir / "ok_a.wav"), "--out",
                           str(tmp_path / "runs"), "--job-id", "j", "-p", f"asr_model={tiny_whisper}",
                           "-p", f"mt_model={tiny_marian}", "-p", "mt_beams=1"],
                          cwd=work, env=cli_env, capture_output=True, text=True, timeout=300)
    assert _markers(work) == [], proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_a_module_attr_pipeline_from_the_working_folder_loads_behind_installed_packages(tmp_path, cli_env,
                                                                                       tiny_marian):
    work = tmp_path / "work"
    work.mkdir()
    _plant(work)
    (work / "my_pipeline.py").write_text(
        "from pipelines.speech_translation import translate\n\n"
        f"def pipe():\n    return translate(model={str(tiny_marian)!r}, beams=1)\n")
    (work / "in.txt").write_text("a sentence\n")
    proc = subprocess.run([*CASCADE, "run", "my_pipeline:pipe", "in.txt", "--out", str(tmp_path / "runs"),
                           "--job-id", "j"], cwd=work, env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr  # the folder's own module is found
    assert _markers(work) == []  # and transformers, safetensors, ... are the installed ones


def test_ray_workers_get_the_drivers_folder_behind_installed_packages(tmp_path, monkeypatch):
    import os
    import sys

    from flows import job as jobs
    from flows.runners import USER_PATH_ENV, _ray_worker_env
    from pipelines.graph import Pipeline
    from tests.toy_stages import Upper

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/opt/site-extra")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    env = _ray_worker_env(None)
    assert env["PYTHONPATH"] == "/opt/site-extra" and USER_PATH_ENV not in env  # no module:attr from here
    sys.path.append(str(tmp_path))  # what `cascade run module:attr` does
    env = _ray_worker_env(None)
    assert env["PYTHONPATH"] == "/opt/site-extra" and env[USER_PATH_ENV] == str(tmp_path)

    # A worker given that folder appends it when it loads the job, never ahead of site-packages.
    sys.path.remove(str(tmp_path))
    root = str(tmp_path / "j")
    jobs.write_job(root, Pipeline.chain(Upper()), [{"id": "a", "text": "x"}], [], 4, "j")
    jobs.forget_job(root)
    monkeypatch.setenv(USER_PATH_ENV, str(tmp_path))
    jobs._load_cached.cache_clear()
    jobs.load_job(root)
    assert sys.path[-1] == str(tmp_path) and os.environ[USER_PATH_ENV] == str(tmp_path)
    jobs._load_cached.cache_clear()
