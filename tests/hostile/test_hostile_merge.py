"""Issue 15 item 14: every bad `cascade merge` config or data is exit 2 with one line, no traceback.

Before the fix each case printed its message inside 3 tracebacks (task, flow and CLI), and an
existing output folder was only noticed inside the flow, after the models were read.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from safetensors.torch import load_file, save_file

from stages.methods.merging import MergeConfigError, MergeInputError, check_output_dir, load_merge_config, plan_merge
from stages.testing import tiny_merge
from tests.conftest import CASCADE


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-merge")
    base = tiny_merge.llama(root / "a", 1, tokenizer=True)
    tiny_merge.llama(root / "b", 2, finetune_of=base, scale=0.5, tokenizer=True)
    shutil.copytree(root / "b", root / "nan")
    tensors = load_file(str(root / "nan" / "model.safetensors"))
    tensors["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")  # late in the stream: found mid-merge
    save_file(tensors, str(root / "nan" / "model.safetensors"), metadata={"format": "pt"})
    shutil.copytree(root / "b", root / "cut")
    weights = root / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # header intact, data cut short
    return root


def merge_config(root, other: str):
    path = root / f"with-{other}.yml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(root / "a"), "parameters": {"weight": 1.0}},
        {"model": str(root / other), "parameters": {"weight": 1.0}}]}))
    return path


def binary_config(root):
    path = root / "binary.yml"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def existing_out(root):
    out = root / "taken"
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text("the user's file")
    return out


CASES = {  # name -> (config, out dir, what the one line says)
    "nan tensor": (lambda r: merge_config(r, "nan"), lambda r: r / "out-nan", "contains NaN or Inf"),
    "truncated safetensors": (lambda r: merge_config(r, "cut"), lambda r: r / "out-cut", "truncated file"),
    # the config is also bad (a cut model): naming the output dir proves it was checked first
    "existing output dir": (lambda r: merge_config(r, "cut"), existing_out, "exists and is not empty"),
    "binary yaml": (binary_config, lambda r: r / "out-bin", "not a text file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_merge_refuses_bad_input_with_one_line(models, cli_env, case):
    make_config, make_out, expected = CASES[case]
    config, out = make_config(models), make_out(models)
    proc = subprocess.run([*CASCADE, "merge", str(config), str(out)], capture_output=True, text=True,
                          env=cli_env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    if case == "existing output dir":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in models.iterdir() if p.name.startswith(".") and "partial" in p.name]  # no temp dir left


def test_truncated_safetensors_refused_from_the_header(models):
    with pytest.raises(MergeInputError, match=r"cut/model.safetensors: truncated file \(\d+ bytes, its header needs \d+\)"):
        plan_merge(load_merge_config(merge_config(models, "cut")))


def test_binary_yaml_is_a_config_error(models):
    with pytest.raises(MergeConfigError, match="not a text file"):
        load_merge_config(binary_config(models))


def test_output_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MergeConfigError, match="is a file"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(MergeConfigError, match="not a writable folder"):
        check_output_dir(tmp_path / "file" / "sub")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MergeConfigError, match="not empty"):
        check_output_dir(tmp_path / "full")
    assert check_output_dir(tmp_path / "full", overwrite=True) == tmp_path / "full"
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
