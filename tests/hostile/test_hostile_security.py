"""Issue 15, security claims: pickled weights never run code, remote code needs --trust-remote-code, YAML is
read with safe_load only. Every hostile file here would create a marker folder if it ran; each case first
shows (the control) that an unsafe reader really does run it, so a refusal is not an accident of a broken file.

test_hostile_config.py covers the CLI side (one usage line for the pickle and auto_map models)."""
from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from stages.base import ConfigError
from stages.runtime.model_cache import clear_cache

ROOT = Path(__file__).resolve().parents[2]


class _MakesMarker:
    """Unpickling this calls os.mkdir(marker): code execution, made visible."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(autouse=True)
def fresh_model_cache():
    clear_cache()  # a failed load is remembered per path; each case loads its own files
    yield
    clear_cache()


def test_whisper_checkpoint_whose_pickle_runs_code_is_refused(tiny_whisper, tmp_path):
    import whisper

    from stages.asr import WhisperASR

    marker = tmp_path / "ran"
    checkpoint = torch.load(tiny_whisper, map_location="cpu", weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({**checkpoint, "extra": _MakesMarker(marker)}, evil)
    torch.load(evil, weights_only=False)  # control: an unsafe load runs the payload
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(Exception, match="Weights only load failed"):
        whisper.load_model(str(evil), device="cpu")
    with pytest.raises(ConfigError, match="cannot load model"):
        WhisperASR(model=str(evil)).load()
    assert not marker.exists()


def test_hf_dir_with_a_malicious_pytorch_model_bin_is_refused(tiny_marian, tmp_path):
    from stages.translate import Translate

    marker = tmp_path / "ran"
    bad = tmp_path / "bin-model"
    shutil.copytree(tiny_marian, bad)
    state = load_file(str(bad / "model.safetensors"))
    (bad / "model.safetensors").unlink()
    torch.save({**state, "payload": _MakesMarker(marker)}, bad / "pytorch_model.bin")
    torch.load(bad / "pytorch_model.bin", weights_only=False)  # control
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(ConfigError, match="cannot load model"):
        Translate(model=str(bad)).load()
    assert not marker.exists()


def remote_code_dir(model_dir: Path, out: Path, marker: Path) -> Path:
    shutil.copytree(model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["model_type"] = "evil_marian"  # unknown to transformers: only the repository's code could build it
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                       "AutoModelForSeq2SeqLM": "modeling_evil.EvilModel"}
    (out / "config.json").write_text(json.dumps(cfg))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (out / name).write_text(f"import os\nos.makedirs({str(marker)!r}, exist_ok=True)\n")
    return out


def test_auto_map_code_runs_only_with_trust_remote_code(tiny_marian, tmp_path):
    from stages.translate import Translate

    marker = tmp_path / "ran"
    model = remote_code_dir(Path(tiny_marian), tmp_path / "remote", marker)
    with pytest.raises(ConfigError, match="cannot load model"):
        Translate(model=str(model)).load()
    assert not marker.exists()
    clear_cache()
    with pytest.raises(ConfigError):  # control: trusted, the repository's code is imported (then fails)
        Translate(model=str(model), trust_remote_code=True).load()
    assert marker.is_dir()


def test_cascade_merge_refuses_python_yaml_tags(tmp_path):
    from flows.cli import app

    marker = tmp_path / "ran"
    config = tmp_path / "merge.yml"
    config.write_text(f"merge_method: linear\nmodels: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    yaml.unsafe_load(config.read_text())  # control: an unsafe YAML reader runs it
    assert marker.is_dir()
    marker.rmdir()
    res = CliRunner().invoke(app, ["merge", str(config), str(tmp_path / "out")], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not marker.exists() and not (tmp_path / "out").exists()


PRODUCT_DIRS = ("stages", "pipelines", "flows", "scripts", "demo", "experiments", "benchmarks")


def product_files() -> list[Path]:
    """The project's own code: its folders only (a checkout also holds venvs, e.g. .venv-mergekit)."""
    return sorted(p for d in PRODUCT_DIRS for p in (ROOT / d).rglob("*.py"))


def unsafe_calls(path: Path, root: Path = ROOT) -> list[str]:
    """Calls that could run code from a file: torch.load without weights_only=True, any pickle/dill/joblib
    load, yaml.load / unsafe_load / full_load, and a literal trust_remote_code=True."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{path.relative_to(root)}:{node.lineno} {func}"
        safe_torch = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        if func.endswith("torch.load") and not safe_torch:
            found.append(where)
        elif func.split(".")[0] in {"pickle", "cPickle", "dill", "joblib", "marshal"} and "load" in func:
            found.append(where)
        elif func in {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"}:
            found.append(where)
        elif isinstance(kw.get("trust_remote_code"), ast.Constant) and kw["trust_remote_code"].value is True:
            found.append(where)
    return found


def test_no_product_file_reads_a_checkpoint_or_yaml_unsafely():
    files = product_files()
    assert len(files) > 50 and any(p.name == "lazy_checkpoint.py" for p in files)  # really scans the tree
    assert [c for p in files for c in unsafe_calls(p)] == []


def test_the_scanner_finds_each_unsafe_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import torch, pickle, yaml\n"
                      "torch.load('a')\ntorch.load('b', weights_only=False)\ntorch.load('c', weights_only=True)\n"
                      "pickle.load(f)\npickle.loads(b)\nyaml.load(s)\nyaml.safe_load(s)\n"
                      "from_pretrained('m', trust_remote_code=True)\nfrom_pretrained('m', trust_remote_code=flag)\n")
    lines = [c.split()[0] for c in unsafe_calls(sample, tmp_path)]
    assert lines == ["sample.py:2", "sample.py:3", "sample.py:5", "sample.py:6", "sample.py:7", "sample.py:9"]
