"""Merge I/O: sharded/.bin inputs, sharded outputs loadable by from_pretrained, tied weights,
dtype handling, atomic output dir, and one-tensor-at-a-time streaming."""
import json
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stages.methods.merging import MergeInputError, MergeConfigError, run_merge
from stages.testing import tiny_merge
from stages.testing.tiny_tokenizers import numbered_word_tokenizer
from stages.methods.merging.lazy_checkpoint import Checkpoint


def linear_config(*dirs, weights=None, **extra):
    weights = weights or [1.0] * len(dirs)
    return {"models": [{"model": str(d), "parameters": {"weight": w}} for d, w in zip(dirs, weights)],
            "merge_method": "linear", **extra}


def state(path):
    return AutoModelForCausalLM.from_pretrained(str(path)).state_dict()


@pytest.fixture(scope="module")
def llamas(tmp_path_factory):
    root = tmp_path_factory.mktemp("llamas")
    base = tiny_merge.llama(root / "base", 0, max_shard_size="4KB")  # sharded input with an index
    tiny_merge.llama(root / "a", 1, finetune_of=base, scale=0.3)
    tiny_merge.llama(root / "b", 2, finetune_of=base, scale=0.3)
    return root


def test_sharded_in_sharded_out_loads_with_from_pretrained(llamas, tmp_path):
    assert (llamas / "base" / "model.safetensors.index.json").exists()
    out = run_merge(linear_config(llamas / "base", llamas / "a", llamas / "b", weights=[1, 2, 1]),
                    tmp_path / "soup", max_shard_bytes=3000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    merged = state(out)
    refs = [state(llamas / d) for d in ("base", "a", "b")]
    for name, tensor in merged.items():
        expected = (refs[0][name] + 2 * refs[1][name] + refs[2][name]) / 4
        torch.testing.assert_close(tensor, expected, atol=1e-6, rtol=1e-6)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok("w3 w4")["input_ids"] == [7, 8]
    assert (out / "generation_config.json").exists() and (out / "merge_config.yml").exists()
    assert not any(p.name.startswith(".soup") for p in tmp_path.iterdir())


def test_pytorch_bin_input_matches_safetensors(llamas, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(str(llamas / "a"))
    (tmp_path / "a_bin").mkdir()
    model.config.save_pretrained(str(tmp_path / "a_bin"))
    sd = {k: v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "a_bin" / "pytorch_model.bin")  # the legacy HF layout
    from_bin = run_merge(linear_config(llamas / "b", tmp_path / "a_bin"), tmp_path / "m1")
    from_st = run_merge(linear_config(llamas / "b", llamas / "a"), tmp_path / "m2")
    s1, s2 = state(from_bin), state(from_st)
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_tied_embeddings_are_not_missing(tmp_path):
    base = tiny_merge.llama(tmp_path / "t0", 0, tie=True)
    tiny_merge.llama(tmp_path / "t1", 1, tie=True, finetune_of=base, scale=0.5)
    tiny_merge.llama(tmp_path / "u2", 2, tie=False, finetune_of=base, scale=0.5)  # has its own lm_head
    with Checkpoint(tmp_path / "t0") as ck:
        assert "lm_head.weight" not in ck
    out = run_merge(linear_config(tmp_path / "t0", tmp_path / "t1"), tmp_path / "tied")
    with Checkpoint(out) as ck:
        assert "lm_head.weight" not in ck  # still tied: nothing to merge
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # A model with its own lm_head merged with tied ones: their embeddings stand in for lm_head.
    out = run_merge(linear_config(tmp_path / "u2", tmp_path / "t0", tmp_path / "t1"), tmp_path / "mixed")
    s = {k: v for k, v in state(out).items()}
    u2, t0, t1 = state(tmp_path / "u2"), state(tmp_path / "t0"), state(tmp_path / "t1")
    expected = (u2["lm_head.weight"] + t0["model.embed_tokens.weight"] + t1["model.embed_tokens.weight"]) / 3
    torch.testing.assert_close(s["lm_head.weight"], expected)


def test_dtype_casts_inputs_then_output(llamas, tmp_path):
    out = run_merge(linear_config(llamas / "a", llamas / "b", dtype="bfloat16"), tmp_path / "bf16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with Checkpoint(out) as ck:
        merged = {n: ck.load(n) for n in ck.names()}
    a, b = state(llamas / "a"), state(llamas / "b")
    for name, tensor in merged.items():
        assert tensor.dtype == torch.bfloat16
        expected = ((a[name].bfloat16().float() + b[name].bfloat16().float()) / 2).bfloat16()
        assert torch.equal(tensor, expected), name
    out = run_merge(linear_config(llamas / "a", llamas / "b", out_dtype="float16"), tmp_path / "fp16")
    with Checkpoint(out) as ck:
        assert {ck.info(n).dtype for n in ck.names()} == {torch.float16}


def test_output_dir_is_never_half_written(llamas, tmp_path):
    bad = tmp_path / "bad"
    model = AutoModelForCausalLM.from_pretrained(str(llamas / "a"))
    with torch.no_grad():
        model.model.norm.weight[3] = float("nan")  # sorts last: fails after most tensors were written
    model.save_pretrained(str(bad))
    out = tmp_path / "out"
    with pytest.raises(MergeInputError, match=r"model\.norm\.weight.*NaN"):
        run_merge(linear_config(llamas / "b", bad), out, max_shard_bytes=2000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_existing_output_dir(llamas, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MergeConfigError, match="not empty"):
        run_merge(linear_config(llamas / "a"), out)
    assert (out / "keep.txt").exists()
    run_merge(linear_config(llamas / "a"), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_config_and_tokenizer_sources(llamas, tmp_path):
    other = tmp_path / "other_tok"
    numbered_word_tokenizer(64).save_pretrained(other)
    cfg = json.loads((llamas / "b" / "config.json").read_text())
    cfg["rms_norm_eps"] = 0.125
    (tmp_path / "cfg_src").mkdir()
    (tmp_path / "cfg_src" / "config.json").write_text(json.dumps(cfg))
    out = run_merge(linear_config(llamas / "a", llamas / "b", tokenizer_source=str(other),
                                  config_source=str(tmp_path / "cfg_src")), tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["rms_norm_eps"] == 0.125
    assert (out / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_streams_one_tensor_at_a_time(llamas, tmp_path, monkeypatch):
    """At most two tensor groups (the one being merged and the prefetched next) are alive."""
    live, peak, loads = set(), [0], [0]
    real_load = Checkpoint.load

    def counting_load(self, name):
        tensor = real_load(self, name)
        key = loads[0]
        loads[0] += 1
        live.add(key)
        peak[0] = max(peak[0], len(live))
        weakref.finalize(tensor, live.discard, key)
        return tensor

    monkeypatch.setattr(Checkpoint, "load", counting_load)
    n_inputs = 3
    run_merge(linear_config(llamas / "base", llamas / "a", llamas / "b"), tmp_path / "m", max_shard_bytes=4000)
    with Checkpoint(llamas / "base") as ck:
        n_tensors = len(list(ck.names()))
    assert loads[0] == n_inputs * n_tensors
    assert peak[0] <= 2 * n_inputs, f"{peak[0]} input tensors alive at once"
    assert not live
