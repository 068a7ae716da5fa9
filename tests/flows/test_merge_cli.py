"""`cascade merge CONFIG OUT`: a Prefect flow around run_merge; bad configs exit 2 with one line."""
from __future__ import annotations

import subprocess

import torch
import yaml
from safetensors.torch import load_file

from stages.testing import tiny_merge
from tests.conftest import CASCADE


def test_cli_merge_writes_the_linear_average(tmp_path, cli_env):
    base = tiny_merge.llama(tmp_path / "a", 1, tokenizer=True)
    tiny_merge.llama(tmp_path / "b", 2, finetune_of=base, scale=0.5, tokenizer=True)
    cfg = tmp_path / "merge.yml"
    cfg.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(tmp_path / "a"), "parameters": {"weight": 1.0}},
        {"model": str(tmp_path / "b"), "parameters": {"weight": 3.0}}]}))
    proc = subprocess.run([*CASCADE, "merge", str(cfg), str(tmp_path / "out")], capture_output=True, text=True,
                          env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(merged[name], (a[name] + 3 * b[name]) / 4, atol=1e-6)


def test_cli_merge_bad_config_exits_2(tmp_path, cli_env):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("merge_method: blend\nmodels: [{model: /nope}]\n")
    proc = subprocess.run([*CASCADE, "merge", str(cfg), str(tmp_path / "out")], capture_output=True, text=True,
                          env=cli_env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "blend" in proc.stderr or "/nope" in proc.stderr
    assert not (tmp_path / "out").exists()
