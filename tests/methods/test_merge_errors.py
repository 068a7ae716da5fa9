"""Bad merge input -> a typed error whose message names the tensor / model / field at fault."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from stages.methods.merging import MergeConfigError, MergeInputError, load_merge_config, parse_merge_config, run_merge
from stages.testing import tiny_merge


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("err")
    base = tiny_merge.llama(root / "base", 0, tokenizer=False)
    tiny_merge.llama(root / "a", 1, finetune_of=base, scale=0.5, tokenizer=False)
    tiny_merge.llama(root / "big_vocab", 2, vocab_size=80, tokenizer=False)
    tiny_merge.llama(root / "wide", 3, hidden=32, tokenizer=False)
    return root


def ties(models, *others, **extra):
    return {"models": [{"model": str(models / o), "parameters": {"weight": 1.0, "density": 0.5}} for o in others],
            "merge_method": "ties", "base_model": str(models / "base"), **extra}


def edit_weights(src, dst, edit):
    import shutil
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})


def test_unknown_method():
    with pytest.raises(MergeConfigError, match=r"merge_method: unknown method 'tiez'.*ties"):
        parse_merge_config({"models": [{"model": "x"}], "merge_method": "tiez"})


@pytest.mark.parametrize("density", [0, -0.1, 1.5, [0.5, 0.0]])
def test_density_out_of_range(models, density):
    cfg = ties(models, "a")
    cfg["models"][0]["parameters"]["density"] = density
    with pytest.raises(MergeConfigError, match=r"models\[0\]\.parameters\.density: .* must be in \(0, 1\]"):
        parse_merge_config(cfg)


def test_global_density_filter_checked_too(models):
    cfg = ties(models, "a", parameters={"density": [{"filter": "mlp", "value": 2.0}, {"value": 0.5}]})
    with pytest.raises(MergeConfigError, match=r"parameters\.density: 2\.0 must be in"):
        parse_merge_config(cfg)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "dare_linear", "task_arithmetic", "slerp"])
def test_missing_base_model(models, method):
    cfg = {"models": [{"model": str(models / "a"), "parameters": {"weight": 1.0}}], "merge_method": method}
    with pytest.raises(MergeConfigError, match=rf"base_model: merge_method '{method}' needs a base_model"):
        parse_merge_config(cfg)


def test_unknown_parameter_and_missing_weight(models):
    cfg = ties(models, "a")
    cfg["models"][0]["parameters"]["densty"] = 0.3
    with pytest.raises(MergeConfigError, match=r"models\[0\]\.parameters\.densty: not a parameter of 'ties'"):
        parse_merge_config(cfg)
    cfg = ties(models, "a")
    del cfg["models"][0]["parameters"]["weight"]
    with pytest.raises(MergeConfigError, match=r"models\[0\] \(.*/a\): missing required parameter 'weight' for tensor"):
        run_merge(parse_merge_config(cfg), models / "never")
    assert not (models / "never").exists()


def test_slerp_needs_exactly_two_models(models):
    cfg = {"models": [{"model": str(models / "a")}, {"model": str(models / "wide")}], "merge_method": "slerp",
           "base_model": str(models / "base"), "parameters": {"t": 0.5}}
    with pytest.raises(MergeConfigError, match="exactly 1 other"):
        parse_merge_config(cfg)


def test_nonexistent_model_path(models, tmp_path):
    cfg = tmp_path / "m.yml"
    cfg.write_text(f"models:\n  - model: {models / 'nope'}\n    parameters: {{weight: 1}}\n"
                   f"merge_method: ties\nbase_model: {models / 'base'}\n")
    with pytest.raises(MergeConfigError, match=r"models\[0\]\.model: model path '.*/nope' does not exist"):
        load_merge_config(cfg)
    with pytest.raises(MergeConfigError, match=r"base_model: model path"):
        run_merge(parse_merge_config(ties(models, "a") | {"base_model": str(models / "gone")}), tmp_path / "o")


def test_different_vocab_sizes(models, tmp_path):
    with pytest.raises(MergeInputError, match=r"shape mismatch for tensor 'lm_head\.weight'.*\[64, 16\].*\[80, 16\].*vocabulary"):
        run_merge(ties(models, "a", "big_vocab"), tmp_path / "o")
    assert not list(tmp_path.iterdir())


def test_mismatched_shapes(models, tmp_path):
    with pytest.raises(MergeInputError, match=r"shape mismatch for tensor '.*'.*models\[1\] \(.*/wide\): \[64, 32\]$"):
        run_merge(ties(models, "a", "wide"), tmp_path / "o")


def test_missing_tensor(models, tmp_path):
    edit_weights(models / "a", tmp_path / "holey", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(MergeInputError,
                       match=r"tensor 'model\.layers\.1\.mlp\.up_proj\.weight' is missing from models\[0\] \(.*/holey\)"):
        run_merge(ties(tmp_path, "holey") | {"base_model": str(models / "base")}, tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(models, tmp_path, bad):
    def poison(t):
        t["model.layers.0.self_attn.q_proj.weight"][0, 0] = bad
    edit_weights(models / "a", tmp_path / "poisoned", poison)
    with pytest.raises(MergeInputError,
                       match=r"tensor 'model\.layers\.0\.self_attn\.q_proj\.weight' of models\[0\] \(.*/poisoned\) contains NaN or Inf"):
        run_merge(ties(tmp_path, "poisoned") | {"base_model": str(models / "base")}, tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poisoned"]


def test_differing_integer_buffers(models, tmp_path):
    edit_weights(models / "a", tmp_path / "i1", lambda t: t.update(step=torch.tensor([1, 2])))
    edit_weights(models / "a", tmp_path / "i2", lambda t: t.update(step=torch.tensor([1, 3])))
    cfg = {"models": [{"model": str(tmp_path / m), "parameters": {"weight": 1}} for m in ("i1", "i2")],
           "merge_method": "linear"}
    with pytest.raises(MergeInputError, match=r"non-floating tensor 'step' differs between models\[0\].*models\[1\]"):
        run_merge(cfg, tmp_path / "o")


def test_zero_weight_sum_with_normalize(models, tmp_path):
    cfg = {"models": [{"model": str(models / "a"), "parameters": {"weight": 1}},
                      {"model": str(models / "base"), "parameters": {"weight": -1}}], "merge_method": "linear"}
    with pytest.raises(MergeConfigError, match="weights sum to 0"):
        run_merge(cfg, tmp_path / "o")


def test_not_a_model_dir(models, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = ties(models, "a")
    cfg["models"][0]["model"] = str(tmp_path / "empty")
    with pytest.raises(MergeInputError, match=r"empty: no weights found"):
        run_merge(cfg, tmp_path / "o")
