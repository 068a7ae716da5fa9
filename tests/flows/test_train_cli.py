"""`cascade train`: exit 0 and a loadable output folder; bad recipe, options or data -> exit 2 and one line."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import CASCADE
from tests.training.training_fixtures import tiny_data  # noqa: F401  (fixture)


def _train(args, env, timeout=300):
    return subprocess.run([*CASCADE, "train", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_train_mt_writes_a_loadable_model(tiny_data, tmp_path, cli_env):  # noqa: F811
    from transformers import AutoModelForSeq2SeqLM

    proc = _train(["mt", "--data", str(tiny_data["train"]), "--model", str(tiny_data["start"]), "--out",
                   str(tmp_path / "mt"), "--steps", "4", "--batch-size", "8", "--threads", "1", "--save-every", "2",
                   "-p", "label_smoothing=0"], cli_env)
    assert proc.returncode == 0, proc.stderr
    assert f"trained mt for 4 steps into {tmp_path / 'mt'}" in proc.stdout
    assert json.loads((tmp_path / "mt" / "train.json").read_text())["steps"] == 4
    assert (tmp_path / "mt" / "checkpoint-2" / "trainer_state.json").exists()
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "mt").config.d_model == 32


def test_help_lists_every_recipe(cli_env):
    from stages.training.recipe_table import RECIPES

    proc = _train(["--help"], cli_env)
    assert proc.returncode == 0
    for name in RECIPES:
        assert f"{name}:" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["nosuch"], "unknown recipe 'nosuch'; choose one of: mt, bagged"),
    (["mt", "-p", "colour=red"], "colour: Extra inputs are not permitted"),
    (["mt", "--steps", "0"], "steps: Input should be greater than or equal to 1"),
    (["word-kd"], "teacher: Field required"),
    (["mt", "--data", "missing.jsonl"], "training data not found: missing.jsonl"),
    (["mt", "BAD_JSONL"], ":2: not JSON"),
])
def test_bad_usage_exits_2_with_one_line(args, needle, tiny_data, tmp_path, cli_env):  # noqa: F811
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a", "target": "b"}\n{oops\n')
    base = {"--data": str(tiny_data["train"]), "--model": str(tiny_data["start"]), "--out": str(tmp_path / "o")}
    if "BAD_JSONL" in args:
        args = [a for a in args if a != "BAD_JSONL"]
        base["--data"] = str(bad)
    for flag in ("--data",):
        if flag in args:
            base.pop(flag)
    proc = _train([*args, *[x for kv in base.items() for x in kv]], cli_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
