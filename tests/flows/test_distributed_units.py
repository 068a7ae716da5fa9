"""The small pieces behind workers, deployments and Ray, without starting any of them."""
from __future__ import annotations

import json

import pytest

from flows.deploy import expand_inputs, job_id_for, keep_previous_order
from flows.preflight import looks_local, missing_model_paths
from flows.workers import parse_gpus, worker_specs


def test_one_worker_per_gpu_each_seeing_only_its_gpu():
    specs = worker_specs("pool", parse_gpus("0, 1"), host="box")
    assert [s.name for s in specs] == ["box-gpu0", "box-gpu1"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1"]
    for s in specs:
        cmd = s.command
        assert cmd[1:3] == ["worker", "start"]
        assert cmd[cmd.index("--pool") + 1] == "pool" and cmd[cmd.index("--limit") + 1] == "1"
        assert cmd[cmd.index("--type") + 1] == "process"
    [cpu] = worker_specs("pool", parse_gpus(None), host="box")
    assert cpu.name == "box-cpu" and cpu.env["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(ValueError, match="twice"):
        parse_gpus("0,0")


def test_job_id_from_deployment_name():
    assert job_id_for("nightly") == "nightly"
    assert job_id_for("ASR nightly / de") == "ASR-nightly-de"
    with pytest.raises(ValueError):
        job_id_for("///")


def test_globs_expand_sorted_and_known_items_keep_their_order(tmp_path):
    for name in ["b.txt", "a.txt", "c.wav"]:
        (tmp_path / name).write_text("x\n")
    assert expand_inputs([str(tmp_path / "*.txt"), str(tmp_path / "a.txt"), str(tmp_path / "none*")]) == [
        str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    job = tmp_path / "job"
    job.mkdir()
    (job / "manifest.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in ["m", "z", "a"]))
    items = [{"id": i} for i in ["0new", "a", "m", "q", "z"]]
    assert [it["id"] for it in keep_previous_order(items, str(job))] == ["m", "z", "a", "0new", "q"]
    assert keep_previous_order(items, str(tmp_path / "no-job-yet")) == items


def test_preflight_checks_local_model_paths_only(tmp_path):
    from pipelines.graph import Pipeline
    from stages.translate import Translate

    assert looks_local("/abs/model.pt") and looks_local("./m") and looks_local("ckpt.safetensors")
    assert not looks_local("tiny") and not looks_local("Helsinki-NLP/opus-mt-en-de")
    assert not looks_local("s3://bucket/model")
    pipe = Pipeline("p").add("mt", Translate(model=str(tmp_path / "missing")))
    assert missing_model_paths(pipe) == [f"node mt: model {str(tmp_path / 'missing')!r} does not exist"]
    pipe = Pipeline("p").add("mt", Translate(model="Helsinki-NLP/opus-mt-en-de"))
    assert missing_model_paths(pipe) == []  # a hub id: not ours to judge offline


def test_ray_resource_options_follow_the_stage_config(monkeypatch):
    pytest.importorskip("prefect_ray")
    from prefect.context import FlowRunContext
    from prefect_ray.context import RemoteOptionsContext

    from flows.runners import resource_options
    from stages.base import StageConfig

    class FakeRay:  # only the module name matters to resource_options
        pass

    FakeRay.__module__ = "prefect_ray.task_runners"
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: type("Ctx", (), {"task_runner": FakeRay()})()))
    with resource_options(StageConfig(num_cpus=2, num_gpus=1)):
        assert RemoteOptionsContext.get().current_remote_options == {"num_cpus": 2, "num_gpus": 1, "max_calls": 0}
    with resource_options(StageConfig()):
        assert RemoteOptionsContext.get().current_remote_options == {"num_cpus": 1, "num_gpus": 0}
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: None))
    with resource_options(StageConfig(num_gpus=1)):
        assert RemoteOptionsContext.get().current_remote_options == {}  # other runners: untouched


def test_a_long_lived_worker_reloads_a_job_that_a_new_run_rewrote(tmp_path):
    import shutil

    from flows import job as jobs
    from flows.job_folder import JobFolder
    from flows.job_flow import stage_batch
    from flows.store import RunStore
    from pipelines.graph import Pipeline
    from tests.toy_stages import Upper

    root, elsewhere = str(tmp_path / "j"), str(tmp_path / "elsewhere" / "j")
    jobs.write_job(root, Pipeline.chain(Upper()), [{"id": "a", "text": "old"}], [], 4, "j")
    jobs._live.pop(root)  # a worker process: the job comes from the folder and stays cached
    run = stage_batch.fn  # the task's function, without Prefect
    first = run(root, "upper", 0, {}, None, "run-1")
    assert [r["output"]["text"] for r in RunStore(root).read_batch("upper", first["key"])] == ["OLD"]

    # A new run of the same job id (written by another process) brings other items.
    jobs.write_job(elsewhere, Pipeline.chain(Upper()), [{"id": "b", "text": "new"}], [], 4, "j")
    jobs._live.pop(elsewhere)
    assert run(root, "upper", 0, {}, None, "run-1") == {**first, "cached": True, "seconds": 0.0}  # cached again
    for name in (JobFolder.JOB, JobFolder.MANIFEST):
        shutil.copy(f"{elsewhere}/{name}", f"{root}/{name}")
    again = run(root, "upper", 0, {}, None, "run-1")
    assert again["key"] == first["key"]  # same run: the cached job is used (and would be stale)
    fresh = run(root, "upper", 0, {}, None, "run-2")
    assert [r["output"]["text"] for r in RunStore(root).read_batch("upper", fresh["key"])] == ["NEW"]


@pytest.mark.parametrize("args, needle", [
    (["deploy", "tests.toy_pipelines:upper_split", "--name", "n", "--pool", "p"], "give at least one --inputs"),
    (["deploy", "tests.toy_pipelines:upper_split", "--name", "n", "--pool", "p", "--inputs", "x/*.txt",
      "--cron", "0 2 * * *", "--interval", "60"], "not both"),
    (["deploy", "tests.toy_pipelines:upper_split", "--name", "n", "--pool", "p", "--inputs", "x/*.txt",
      "-p", "colour=red"], "no parameter 'colour'"),
    (["submit", "no-such-deployment"], "no deployment named 'no-such-deployment'"),
    (["run", "tests.toy_pipelines:upper_split", "README.md", "--gpu-limit", "gpu-no-such-pool"], "does not exist"),
    (["worker", "--pool", "p", "--gpus", "0,0"], "lists a device twice"),
])
def test_distributed_commands_refuse_bad_usage_with_exit_2(args, needle, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path)] if args[0] in ("run", "deploy") else args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_real_server_keeps_automations_that_only_the_embedded_server_drops(monkeypatch):
    from flows import settings
    from flows.server import server_env

    key = "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"
    monkeypatch.setenv(key, "false")
    monkeypatch.setattr(settings, "embedded_only", [key])  # we set it, for the temporary server
    env = server_env()
    assert key not in env  # `cascade server` runs automations
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "200"  # batching stays
    monkeypatch.setattr(settings, "embedded_only", [])  # the user exported it: their choice wins
    assert server_env()[key] == "false"


def test_openmp_threads_sleep_while_waiting_unless_the_user_says_otherwise():
    import os
    import subprocess
    import sys

    from flows.settings import DEFAULTS

    probe = ("import os, stages, flows; before = os.environ.get('OMP_WAIT_POLICY'); "
             "from flows import settings; settings.apply(); settings.apply(); "
             "print(before, os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = lambda e: subprocess.run([sys.executable, "-c", probe], env=e, capture_output=True,  # noqa: E731
                                   text=True, check=True).stdout.split()
    assert out(env) == ["None", "PASSIVE"]  # importing sets nothing; apply() does
    assert out({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE", "ACTIVE"]
    assert DEFAULTS["OMP_WAIT_POLICY"] == "PASSIVE"  # Ray workers get DEFAULTS as their environment


def test_the_temporary_server_logs_only_critical_errors_and_cascade_server_keeps_errors():
    import os
    import subprocess
    import sys

    probe = ("import os, flows; from flows import settings; settings.apply(); from flows.server import server_env; "
             "print(os.environ['PREFECT_SERVER_LOGGING_LEVEL'], server_env()['PREFECT_SERVER_LOGGING_LEVEL'])")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_SERVER_LOGGING_LEVEL", "PREFECT_API_URL")}
    out = lambda e: subprocess.run([sys.executable, "-c", probe], env=e, capture_output=True,  # noqa: E731
                                   text=True, check=True).stdout.split()
    # The temporary server's subprocess inherits CRITICAL (its shutdown noise stays off the console);
    # `cascade server` is a real server whose errors someone reads.
    assert out(env) == ["CRITICAL", "ERROR"]
    assert out({**env, "PREFECT_SERVER_LOGGING_LEVEL": "DEBUG"}) == ["DEBUG", "DEBUG"]  # an exported level wins
