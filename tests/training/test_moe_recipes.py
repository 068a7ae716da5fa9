"""Recipes moe and upcycle (stages/training/moe_recipes.py) on tiny Marians."""
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from stages.methods.moe.moe_marian import load_moe_marian, moe_modules
from stages.training.moe_recipes import MoEOptions, run_moe, run_upcycle
from tests.training.training_fixtures import first_and_last_loss, tiny_data  # noqa: F401  (fixture)


def test_moe_from_scratch_trains_and_loads(tiny_data, tmp_path):  # noqa: F811
    result = run_moe(MoEOptions(data=tiny_data["train"], model=str(tiny_data["config_only"]), out=tmp_path,
                                experts=4, top_k=2, d_ff=32, steps=25, batch_size=8, lr=3e-3, warmup=2, threads=1))
    first, last = first_and_last_loss(result)
    assert last < 0.8 * first
    model, tok = load_moe_marian(tmp_path)
    layers = moe_modules(model)
    assert len(layers) == 2 and all(m.cfg.n_experts == 4 and m.cfg.d_ff == 32 for m in layers.values())
    assert model.generate(**tok(["the cat"], return_tensors="pt"), max_new_tokens=5).shape[0] == 1


def test_upcycled_model_starts_as_the_dense_one(tiny_data, tmp_path):  # noqa: F811
    """With lr ~0 the upcycled copies compute the dense model's function (renormalised top-2 of equal experts)."""
    run_upcycle(MoEOptions(data=tiny_data["train"], model=str(tiny_data["start"]), out=tmp_path, experts=3,
                           steps=1, lr=1e-12, warmup=0, threads=1))
    moe, tok = load_moe_marian(tmp_path)
    dense = AutoModelForSeq2SeqLM.from_pretrained(tiny_data["start"]).eval()
    enc = AutoTokenizer.from_pretrained(tiny_data["start"])(["the cat sat", "a dog"], return_tensors="pt", padding=True)
    start = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        a = dense(**enc, decoder_input_ids=start).logits
        b = moe(**enc, decoder_input_ids=start).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert len(moe_modules(moe)) == 2
