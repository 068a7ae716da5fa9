"""MoE feed-forward layers inside a Marian MT model: upcycling parity, save/load, aux-loss gradients, generate."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import MarianMTModel

from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.moe_marian import (MarianMoEFFN, choose_layers, convert_marian_to_moe, layer_stats, load_moe_marian,
                               masked_stats, moe_aux_loss, moe_modules, param_counts, save_moe_marian)
from stages.testing.tiny_checkpoints import tiny_marian
from stages.testing.tiny_tokenizers import word_tokenizer

D, FFN, LAYERS = 32, 48, 2


def tiny_moe_base(seed: int = 0) -> MarianMTModel:
    model = tiny_marian(seed=seed, d_model=D, layers=LAYERS, ffn=FFN, max_length=12, activation_function="gelu",
                        dropout=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # large random weights and biases: the FFN must matter to the output
        for name, p in model.named_parameters():
            if ".fc1." in name or ".fc2." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (3, 7), generator=g)
    ids[:, -1] = 1
    mask = torch.ones_like(ids)
    ids[2, 4:], mask[2, 4:] = 0, 0  # one padded row
    labels = torch.randint(3, 40, (3, 5), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def moe_cfg(**kw) -> MoEConfig:
    return MoEConfig(**{"d_model": D, "d_ff": FFN, "n_experts": 4, "top_k": 2, "router": "topk",
                        "renormalize": True, **kw})


def randomize_routers(model, scale: float = 2.0, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for moe in moe_modules(model).values():
            moe.router.weight.copy_(torch.randn(moe.router.weight.shape, generator=g) * scale)


def logits(model, b) -> torch.Tensor:
    with torch.no_grad():
        return model(**b).logits


@pytest.mark.parametrize("layers", ["all", "every_other"])
def test_upcycled_model_computes_the_dense_function(layers):
    dense = tiny_moe_base()
    b = batch()
    ref = logits(dense, b)
    moe = tiny_moe_base()
    names = convert_marian_to_moe(moe, moe_cfg(), layers=layers, upcycle=True, seed=0)
    assert names == choose_layers(moe, layers) and len(names) == (4 if layers == "all" else 2)
    randomize_routers(moe)  # whatever the router picks, k identical experts with weights summing to 1
    out = logits(moe.eval(), b)
    assert (out - ref).abs().max() < 1e-4
    used = sum((s.tokens_per_expert > 0).sum().item() for s in layer_stats(moe).values())
    assert used > len(names) * 2  # the routers really spread tokens over several experts


def test_upcycling_without_renormalisation_changes_the_function():
    """Negative control: raw (un-renormalised) top-2 probabilities scale the FFN, so parity must break."""
    dense, moe = tiny_moe_base(), tiny_moe_base()
    convert_marian_to_moe(moe, moe_cfg(renormalize=False), upcycle=True, seed=0)
    b = batch()
    assert (logits(moe, b) - logits(dense, b)).abs().max() > 1e-2


def test_upcycled_experts_are_copies_and_params_counted():
    dense, moe = tiny_moe_base(), tiny_moe_base()
    convert_marian_to_moe(moe, moe_cfg(), upcycle=True)
    fc1 = dense.model.encoder.layers[1].fc1
    layer = moe_modules(moe)["encoder.layers.1"]
    for e in range(4):
        assert torch.equal(layer.fc1_weight[e], fc1.weight) and torch.equal(layer.fc1_bias[e], fc1.bias)
    counts = param_counts(moe)
    per_expert = 2 * D * FFN + FFN + D
    dense_total = sum(p.numel() for p in dense.parameters())
    routers = 2 * LAYERS * 4 * D
    assert counts["total"] == dense_total + 2 * LAYERS * (3 * per_expert + 4 * D)
    assert counts["active"] == dense_total + 2 * LAYERS * per_expert + routers  # top-2: one extra expert
    assert param_counts(dense) == {"total": dense_total, "active": dense_total}


def test_save_load_round_trip_translates_identically(tmp_path):
    model = tiny_moe_base()
    convert_marian_to_moe(model, moe_cfg(), layers="every_other", upcycle=False, seed=3)
    randomize_routers(model)
    tok = word_tokenizer()
    save_moe_marian(model, tok, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "moe_config.json").read_text())
    assert sorted(meta["layers"]) == ["decoder.layers.1", "encoder.layers.1"] and meta["moe"]["n_experts"] == 4
    loaded, tok2 = load_moe_marian(tmp_path / "m")
    assert isinstance(loaded.model.decoder.layers[1].fc1, MarianMoEFFN)
    assert not isinstance(loaded.model.decoder.layers[0].fc1, MarianMoEFFN)
    b = batch(1)
    assert torch.equal(logits(loaded, b), logits(model.eval(), b))
    enc = tok2(["the cat sees a dog .", "who is not big ?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = model.generate(**enc, num_beams=2, max_new_tokens=10)
        c = loaded.generate(**enc, num_beams=2, max_new_tokens=10)
    assert torch.equal(a, c) and a.shape[1] > 2


def test_dense_model_saved_the_same_way_loads_dense(tmp_path):
    model = tiny_moe_base()
    save_moe_marian(model, None, tmp_path / "d")
    assert not (tmp_path / "d" / "moe_config.json").exists()
    loaded, _ = load_moe_marian(tmp_path / "d", with_tokenizer=False)
    assert not moe_modules(loaded)
    b = batch()
    assert torch.equal(logits(loaded, b), logits(model, b))


def test_aux_loss_reaches_every_router():
    model = tiny_moe_base()
    convert_marian_to_moe(model, moe_cfg(balance_coef=0.01, z_coef=0.001), upcycle=True, seed=0)
    model.train()
    b = batch()
    model(**b)
    aux = moe_aux_loss(model, b["attention_mask"], torch.ones_like(b["labels"]))
    assert aux.item() > 0
    aux.backward()
    for name, moe in moe_modules(model).items():
        assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0, name
    # The aux loss depends on routing only: experts of the last decoder layer feed no router.
    last = moe_modules(model)[f"decoder.layers.{LAYERS - 1}"]
    assert last.fc1_weight.grad is None and last.fc2_weight.grad is None


def test_no_balance_no_z_means_zero_aux_loss():
    model = tiny_moe_base()
    convert_marian_to_moe(model, moe_cfg(balance_coef=0.0, z_coef=0.0), upcycle=True, seed=0)
    model(**batch())
    assert moe_aux_loss(model).item() == 0.0


def test_masked_stats_drop_padding_tokens():
    model = tiny_moe_base()
    convert_marian_to_moe(model, moe_cfg(), upcycle=True, seed=0)
    randomize_routers(model)
    b = batch()
    logits(model, b)
    full = layer_stats(model)["encoder.layers.0"]
    masked = layer_stats(model, encoder_mask=b["attention_mask"])["encoder.layers.0"]
    n_real = int(b["attention_mask"].sum())
    assert int(full.tokens_per_expert.sum()) == b["input_ids"].numel() * 2
    assert int(masked.tokens_per_expert.sum()) == n_real * 2 < int(full.tokens_per_expert.sum())
    with pytest.raises(ValueError):
        masked_stats(full, torch.ones(3))


def greedy_by_hand(model, enc, steps: int) -> torch.Tensor:
    """Reference: greedy decoding by full forward passes (no KV cache, no generate)."""
    out = torch.full((enc["input_ids"].shape[0], 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        for _ in range(steps):
            step = model(**enc, decoder_input_ids=out).logits[:, -1]
            step[:, model.config.pad_token_id] = -float("inf")  # Marian never writes pad
            out = torch.cat([out, step.argmax(-1, keepdim=True)], dim=1)
    return out


def test_upcycled_model_generates_exactly_what_the_dense_model_generates(tmp_path):
    dense = tiny_moe_base().eval()
    moe = tiny_moe_base()
    convert_marian_to_moe(moe, moe_cfg(), upcycle=True, seed=0)
    randomize_routers(moe)
    save_moe_marian(moe, word_tokenizer(), tmp_path / "up")
    loaded, tok = load_moe_marian(tmp_path / "up")
    enc = tok(["the cat sees a dog .", "who is not big ?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = dense.generate(**enc, num_beams=3, max_new_tokens=10)
        assert torch.equal(moe.eval().generate(**enc, num_beams=3, max_new_tokens=10), want)
        assert torch.equal(loaded.generate(**enc, num_beams=3, max_new_tokens=10), want)
    assert want.shape[1] > 3


def test_generate_with_sparse_layers_equals_greedy_by_hand_and_records_stats():
    model = tiny_moe_base()
    convert_marian_to_moe(model, moe_cfg(), upcycle=False, seed=1)
    randomize_routers(model)
    model.eval()
    tok = word_tokenizer()
    enc = tok(["the cat sees a dog .", "a cat runs"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, num_beams=1, do_sample=False, max_new_tokens=5, min_new_tokens=5,
                             forced_eos_token_id=None)
    assert torch.equal(out, greedy_by_hand(model, enc, 5))  # the KV-cache path routes like the full pass
    assert all(m.last_stats is not None for m in moe_modules(model).values())


def test_bad_conversions_are_refused():
    model = tiny_moe_base()
    with pytest.raises(ValueError, match="d_model"):
        convert_marian_to_moe(model, moe_cfg(d_model=64))
    with pytest.raises(ValueError, match="unknown layers"):
        convert_marian_to_moe(model, moe_cfg(), layers=["encoder.layers.9"])
    convert_marian_to_moe(model, moe_cfg(), layers=["encoder.layers.0"])
    with pytest.raises(ValueError, match="already sparse"):
        convert_marian_to_moe(model, moe_cfg(), layers=["encoder.layers.0"])


def test_results_script_names_the_training_command_for_a_missing_model(tmp_path):
    from experiments.results_moe import check_present

    save_moe_marian(tiny_moe_base(), None, tmp_path / "dense-f256")
    check_present(["dense-f256"], tmp_path)  # present: no exit
    with pytest.raises(SystemExit, match=r"experiments.train_moe_mt --runs moe-scratch$"):
        check_present(["dense-f256", "moe-scratch"], tmp_path)
