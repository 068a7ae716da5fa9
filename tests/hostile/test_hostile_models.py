"""Issue 15 item 20: a model path loads as what it is, or is refused; never a half-random model.

Before the fix a MoE Marian dir (save_moe_marian) loaded in Translate as the dense Marian of its
config.json: 8 weights missing, 10 unexpected here, FFNs random, wrong output, only a log line.
"""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, MarianConfig, MarianMTModel

from stages.methods.ensembling import load_member
from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.moe_marian import convert_marian_to_moe, load_moe_marian, moe_modules, save_moe_marian
from stages.runtime.hf_loading import BadCheckpoint
from stages.runtime.model_cache import clear_cache
from stages.testing.tiny_checkpoints import word_tokenizer
from stages.translate import SourceText, Translate

TEXTS = ["the cat sees a dog .", "who is not big ?", "a small red house and two green ones"]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()  # loads are cached per path; every test here must really load
    yield
    clear_cache()


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    """A MoE Marian whose experts and routers are large and random: the FFNs decide the output."""
    torch.manual_seed(0)
    tok = word_tokenizer()
    config = MarianConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=48,
                          decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                          decoder_start_token_id=0, forced_eos_token_id=1, scale_embedding=True)
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                                               forced_eos_token_id=1, max_length=16, num_beams=1)
    convert_marian_to_moe(model, MoEConfig(d_model=32, d_ff=48, n_experts=4, top_k=2, router="topk"),
                          upcycle=False, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for moe in moe_modules(model).values():
            for p in moe.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return save_moe_marian(model.eval(), tok, tmp_path_factory.mktemp("moe") / "moe-mt")


def reference_generate(path, texts, **kw):
    model, tok = load_moe_marian(path)
    out = []
    with torch.no_grad():
        for text in texts:  # one sentence per call: no padding in the reference
            seq = model.generate(**tok([text], return_tensors="pt"), max_new_tokens=12, **kw)
            out.append(tok.decode(seq[0], skip_special_tokens=True).strip())
    return out


def test_translate_loads_a_moe_checkpoint_as_moe(moe_dir):
    stage = Translate(model=str(moe_dir), num_beams=1, max_new_tokens=12, device="cpu")
    model, tok = stage.load()
    assert len(moe_modules(model)) == 4  # every layer sparse, as saved
    reference, _ = load_moe_marian(moe_dir)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    dec = torch.zeros((len(TEXTS), 3), dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(model(**enc, decoder_input_ids=dec).logits,
                              reference(**enc, decoder_input_ids=dec).logits, atol=1e-5)
    got = [t.text for t in stage.process([SourceText(text=t) for t in TEXTS])]
    assert got == reference_generate(moe_dir, TEXTS, num_beams=1)


def test_ensemble_member_loads_a_moe_checkpoint_as_moe(moe_dir):
    member = load_member(moe_dir, device="cpu")
    assert len(moe_modules(member.model)) == 4


def renamed_copy(src, dst, old_fragment, new_fragment):
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if old_fragment in k)
    tensors[name.replace(old_fragment, new_fragment)] = tensors.pop(name)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return name


def test_dense_checkpoint_with_a_renamed_tensor_is_refused(tiny_marian, tmp_path):
    name = renamed_copy(tiny_marian, tmp_path / "renamed", "fc1.weight", "fc1.wieght")
    stage = Translate(model=str(tmp_path / "renamed"), device="cpu")
    with pytest.raises(BadCheckpoint) as err:
        stage.load()
    message = str(err.value)
    assert "1 weights missing from the checkpoint" in message and name in message
    assert "1 weights not in the model" in message and name.replace("fc1.weight", "fc1.wieght") in message


def test_moe_checkpoint_with_a_renamed_tensor_is_refused(moe_dir, tmp_path):
    name = renamed_copy(moe_dir, tmp_path / "renamed", "fc1_weight", "fc1_wieght")
    with pytest.raises(BadCheckpoint, match=rf"missing from the checkpoint \({name}\)"):
        Translate(model=str(tmp_path / "renamed"), device="cpu").load()


def test_moe_checkpoint_without_its_moe_config_is_refused(moe_dir, tmp_path):
    shutil.copytree(moe_dir, tmp_path / "half")
    (tmp_path / "half" / "moe_config.json").unlink()  # config.json still says MoE
    with pytest.raises(BadCheckpoint, match="moe_config.json is missing"):
        Translate(model=str(tmp_path / "half"), device="cpu").load()


def test_moe_checkpoint_is_not_a_causal_lm(moe_dir):
    from stages.generate import Generate

    with pytest.raises(BadCheckpoint, match="MoE Marian translation model"):
        Generate(model=str(moe_dir), device="cpu").load()


def test_a_merge_of_moe_checkpoints_loads_as_moe(moe_dir, tmp_path):
    from stages.methods.merging import run_merge

    out = run_merge({"merge_method": "linear", "models": [{"model": str(moe_dir), "parameters": {"weight": 1.0}},
                                                           {"model": str(moe_dir), "parameters": {"weight": 1.0}}]},
                    tmp_path / "merged")
    model, _ = Translate(model=str(out), device="cpu").load()
    assert len(moe_modules(model)) == 4
