"""Parity with mergekit 0.1.5, run from its own venv (scripts/mergekit_venv.sh -> .venv-mergekit).

Tiny random Llama (untied and tied) and Marian models; every method is compared tensor by
tensor. DARE is random: with the same seed on CPU our draws follow mergekit's exactly
(same generator stream, same tensor order), so it is compared for equality too.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from stages.methods.merging import run_merge
from stages.testing import tiny_merge
from stages.methods.merging.lazy_checkpoint import Checkpoint

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MERGEKIT_VENV", ROOT / ".venv-mergekit"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

_DRIVER = """
import json, sys
from mergekit.scripts.run_yaml import main
for args in json.load(open(sys.argv[1])):
    main(args, standalone_mode=False)
"""


@pytest.fixture(scope="session")
def mergekit_bin():
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "mergekit_venv.sh")], capture_output=True, text=True,
                          timeout=1800, env={**os.environ, "MERGEKIT_VENV": str(VENV)})
    if proc.returncode != 0:
        msg = (f"!!! MERGEKIT PARITY NOT TESTED: scripts/mergekit_venv.sh failed with exit {proc.returncode}:\n"
               f"{proc.stderr[-2000:]}")
        print(msg, file=sys.stderr)
        pytest.skip(msg)
    return VENV / "bin"


def _ft(name, **params):
    return {"model": name, "parameters": params}


# name -> (models family, config with model names relative to the family dir, seed)
CASES = {
    "llama_linear": ("llama", {"merge_method": "linear", "models": [
        _ft("m1", weight=0.5), _ft("m2", weight=[0.2, 0.8]),
        _ft("m3", weight=[{"filter": "mlp", "value": 0.1}, {"value": 0.3}])]}, None),
    "llama_linear_raw": ("llama", {"merge_method": "linear", "parameters": {"normalize": False},
                                   "models": [_ft("m1", weight=0.3), _ft("m2", weight=0.5)]}, None),
    "llama_task_arithmetic": ("llama", {"merge_method": "task_arithmetic", "base_model": "m0",
                                        "parameters": {"lambda": 0.6},
                                        "models": [_ft("m1", weight=0.7), _ft("m2", weight=-0.5)]}, None),
    "llama_ties": ("llama", {"merge_method": "ties", "base_model": "m0", "dtype": "float32", "models": [
        {"model": "m0"},
        _ft("m1", weight=0.7, density=0.5),
        _ft("m2", weight=[0.3, 1.0], density=[{"filter": "self_attn", "value": 0.3}, {"value": [0.2, 0.9]}]),
        _ft("m3", weight=0.5, density=0.8)]}, None),
    "llama_ties_raw": ("llama", {"merge_method": "ties", "base_model": "m0",
                                 "parameters": {"normalize": False, "lambda": 1.3, "density": 0.4},
                                 "models": [_ft("m1", weight=1.0), _ft("m2", weight=0.5)]}, None),
    "llama_slerp": ("llama", {"merge_method": "slerp", "base_model": "m0", "models": [{"model": "m0"}, {"model": "m1"}],
                              "parameters": {"t": [{"filter": "self_attn", "value": [0.0, 0.5, 1.0]},
                                                   {"filter": "mlp", "value": [1.0, 0.5, 0.0]}, {"value": 0.3}]}}, None),
    "llama_dare_ties": ("llama", {"merge_method": "dare_ties", "base_model": "m0", "models": [
        _ft("m1", weight=0.6, density=0.4), _ft("m2", weight=0.6, density=0.7)]}, 7),
    "llama_dare_linear": ("llama", {"merge_method": "dare_linear", "base_model": "m0", "parameters": {"normalize": True},
                                    "models": [_ft("m1", weight=0.5, density=0.5), _ft("m2", weight=1.0, density=0.3)]}, 11),
    "llama_dare_one": ("llama", {"merge_method": "dare_linear", "base_model": "m0", "models": [
        _ft("m1", weight=1.0, density=0.3)]}, 5),
    "tied_llama_ties": ("tied", {"merge_method": "ties", "base_model": "m0", "models": [
        _ft("m1", weight=0.5, density=0.6), _ft("m2", weight=0.5, density=0.3)]}, None),
    "marian_linear": ("marian", {"merge_method": "linear", "models": [_ft("m0", weight=1), _ft("m1", weight=2)]}, None),
    "marian_task_arithmetic": ("marian", {"merge_method": "task_arithmetic", "base_model": "m0", "models": [
        _ft("m1", weight=1.0), _ft("m2", weight=-0.4)]}, None),
    "marian_ties": ("marian", {"merge_method": "ties", "base_model": "m0", "models": [
        _ft("m1", weight=0.8, density=[0.3, 0.7]), _ft("m2", weight=0.4, density=0.5)]}, None),
    "marian_slerp": ("marian", {"merge_method": "slerp", "base_model": "m0", "models": [{"model": "m2"}],
                                "parameters": {"t": [0.1, 0.9]}}, None),
    "marian_dare_ties": ("marian", {"merge_method": "dare_ties", "base_model": "m0", "models": [
        _ft("m1", weight=0.7, density=0.5), _ft("m2", weight=0.5, density=0.6)]}, 3),
}


def _absolute(config, family_dir):
    config = json.loads(json.dumps(config))
    if "base_model" in config:
        config["base_model"] = str(family_dir / config["base_model"])
    for entry in config["models"]:
        entry["model"] = str(family_dir / entry["model"])
    return config


@pytest.fixture(scope="module")
def parity(mergekit_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    families = {"llama": root / "llama", "tied": root / "tied", "marian": root / "marian"}
    base = tiny_merge.llama(families["llama"] / "m0", 0)
    for i in (1, 2, 3):
        tiny_merge.llama(families["llama"] / f"m{i}", i, finetune_of=base, scale=0.5)
    tbase = tiny_merge.llama(families["tied"] / "m0", 10, tie=True)
    for i in (1, 2):
        tiny_merge.llama(families["tied"] / f"m{i}", 10 + i, tie=True, finetune_of=tbase, scale=0.5)
    mbase = tiny_merge.marian(families["marian"] / "m0", 20)
    for i in (1, 2):
        tiny_merge.marian(families["marian"] / f"m{i}", 20 + i, finetune_of=mbase, scale=0.5)

    jobs, results = [], {}
    for name, (family, config, seed) in CASES.items():
        config = _absolute(config, families[family])
        path = root / f"{name}.yml"
        path.write_text(yaml.safe_dump(config))
        out = root / "mergekit" / name
        args = [str(path), str(out), "--copy-tokenizer", "--no-cuda", "--quiet", "--no-write-model-card"]
        if seed is not None:
            args += ["--random-seed", str(seed)]
        results[name] = (config, out, seed)
        jobs.append(args)
    env = {**os.environ, **OFFLINE}
    (root / "jobs.json").write_text(json.dumps(jobs[1:]))
    (root / "driver.py").write_text(_DRIVER)
    # The real CLI once (offline: local paths need no hub); the rest in one interpreter, concurrently.
    cmds = {"cli": [str(mergekit_bin / "mergekit-yaml"), *jobs[0]],
            "driver": [str(mergekit_bin / "python"), str(root / "driver.py"), str(root / "jobs.json")]}
    logs = {key: open(root / f"{key}.log", "w") for key in cmds}
    procs = {key: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=logs[key], env=env)
             for key, cmd in cmds.items()}
    for key, proc in procs.items():
        proc.wait(timeout=900)
        logs[key].close()
        assert proc.returncode == 0, f"mergekit {key} failed:\n{(root / f'{key}.log').read_text()[-3000:]}"
    return root, results


def _tensors(model_dir):
    with Checkpoint(model_dir) as ck:
        return {name: ck.load(name) for name in ck.names()}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_mergekit(parity, case):
    root, results = parity
    config, theirs_dir, seed = results[case]
    ours_dir = run_merge(config, root / "ours" / case, seed=seed)
    ours, theirs = _tensors(ours_dir), _tensors(theirs_dir)
    assert ours, "nothing merged"
    exact = seed is not None
    for name, tensor in ours.items():
        assert name in theirs, f"{name} missing from mergekit's output"
        ref = theirs[name]
        assert tensor.dtype == ref.dtype and tensor.shape == ref.shape, name
        if exact:
            assert torch.equal(tensor, ref), f"{case}: {name} differs (DARE draws out of step)"
        else:
            torch.testing.assert_close(tensor, ref, atol=1e-6, rtol=1e-6, msg=lambda m: f"{case}: {name}: {m}")
    for name in set(theirs) - set(ours):
        # mergekit writes tied copies (lm_head for a tied Llama) that HF would drop; they equal their source.
        assert name == "lm_head.weight" and torch.equal(theirs[name], theirs["model.embed_tokens.weight"]), name
    assert (ours_dir / "tokenizer.json").read_bytes() == (theirs_dir / "tokenizer.json").read_bytes()


def test_same_logits_as_mergekit_model(parity):
    root, results = parity
    ours = AutoModelForCausalLM.from_pretrained(str(run_merge(results["llama_ties"][0], root / "logits")))
    theirs = AutoModelForCausalLM.from_pretrained(str(results["llama_ties"][1]))
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)


def test_dare_statistics_follow_l1_rescale(parity):
    """Both implementations: kept fraction ≈ density, ‖kept δ‖₁ = ‖δ‖₁ exactly (mergekit's rule
    since 2025), which the paper's 1/density rescale would only match in expectation."""
    root, results = parity
    config, theirs_dir, seed = results["llama_dare_one"]
    density = config["models"][0]["parameters"]["density"]
    family = Path(config["base_model"]).parent
    ours = _tensors(run_merge(config, root / "dare_one", seed=seed))
    theirs = _tensors(theirs_dir)
    base, tuned = _tensors(family / "m0"), _tensors(family / "m1")
    kept_total = numel = 0
    for name in ours:
        delta = tuned[name] - base[name]
        for merged in (ours[name], theirs[name]):
            kept = merged - base[name]
            if delta.numel() >= 256:
                assert float(kept.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-4), name
        kept_total += int(((ours[name] - base[name]) != 0).sum())
        numel += delta.numel()
        assert torch.equal(ours[name], theirs[name]), name
    frac = kept_total / numel
    assert abs(frac - density) < 4 * (density * (1 - density) / numel) ** 0.5
