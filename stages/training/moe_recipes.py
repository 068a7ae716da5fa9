"""Recipes `moe` (a mixture-of-experts Marian from scratch) and `upcycle` (sparse upcycling of a dense one).

    cascade train moe     --data train.jsonl --model MARIAN_CONFIG_DIR --out build/moe -p experts=4
    cascade train upcycle --data train.jsonl --model DENSE_MARIAN --out build/upcycled -p experts=4

`moe` takes the Marian config (and tokenizer) of `--model`, random weights, and makes the
chosen layers' FFNs sparse; `upcycle` loads the dense weights and starts every expert as a copy
of its layer's FFN (Komatsuzaki et al. 2022). Both train on CE + the layers' balance and z-losses
over unpadded tokens and save with `save_moe_marian` (load with `load_moe_marian`).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from stages.training.mt_recipe import MTOptions, load_seq2seq_start, read_dev, read_training_pairs, train_seq2seq
from stages.training.train_data import Pair, seq2seq_batch


class MoEOptions(MTOptions):
    experts: int = Field(4, ge=2)
    top_k: int = Field(2, ge=1)
    d_ff: int | None = Field(None, ge=1, description="expert width (moe; None: the dense FFN width)")
    router: Literal["topk", "noisy_topk", "switch"] = "topk"
    balance_coef: float = Field(0.01, ge=0, description="Switch balance loss α (0: off)")
    z_coef: float = Field(0.001, ge=0, description="router z-loss coefficient")
    layers: Literal["all", "every_other", "encoder", "decoder"] = "all"
    first_step: int = Field(0, ge=0, description="start part-way through the schedule (e.g. an upcycled "
                            "model continuing its dense parent's run)")


def moe_config(opts: MoEOptions, model):
    from stages.methods.moe.moe_config import MoEConfig

    width = opts.d_ff or model.config.encoder_ffn_dim
    coefficients = {"balance_coef": opts.balance_coef, "z_coef": opts.z_coef} if opts.router != "noisy_topk" else {}
    return MoEConfig(d_model=model.config.d_model, d_ff=width, n_experts=opts.experts, top_k=opts.top_k,
                     router=opts.router, **coefficients)


def moe_loss(tokenizer, opts: MoEOptions):
    from stages.methods.moe.moe_marian import moe_aux_loss

    def loss(model, pairs: list[Pair], step: int) -> torch.Tensor:
        batch = seq2seq_batch(tokenizer, pairs, opts.max_length, model.device)
        logits = model(**batch).logits
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100,
                             label_smoothing=opts.label_smoothing)
        return ce + moe_aux_loss(model, batch["attention_mask"], batch["labels"] != -100)
    return loss


def _train(opts: MoEOptions, upcycle: bool, on_step) -> dict:
    from stages.methods.moe.moe_marian import convert_marian_to_moe, param_counts, save_moe_marian

    pairs, dev = read_training_pairs(opts), read_dev(opts)
    model, tokenizer = load_seq2seq_start(opts.model, from_scratch=not upcycle, seed=opts.seed)
    if model.config.model_type != "marian":
        raise ValueError(f"{opts.model} is a {model.config.model_type!r} model; the MoE layers are written "
                         "for Marian (MarianMTModel)")
    layers = convert_marian_to_moe(model, moe_config(opts, model), layers=opts.layers, upcycle=upcycle,
                                   seed=opts.seed)
    result = train_seq2seq(model, tokenizer, pairs, opts, loss=moe_loss(tokenizer, opts), dev=dev, on_step=on_step,
                           first_step=opts.first_step, save=lambda m, folder: save_moe_marian(m, tokenizer, folder))
    return {**result.as_dict(), "sparse_layers": layers, "parameters": param_counts(model)}


def run_moe(opts: MoEOptions, on_step=None) -> dict:
    return _train(opts, upcycle=False, on_step=on_step)


def run_upcycle(opts: MoEOptions, on_step=None) -> dict:
    return _train(opts, upcycle=True, on_step=on_step)
