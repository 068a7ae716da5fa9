"""Recipes `cmlm` (a conditional masked LM for stages/mask_predict.py) and `mlm` (a masked LM for
stages/masked_diffusion.py).

    cascade train cmlm --data train.jsonl --model TOKENIZER_DIR --out build/cmlm -p d_model=160
    cascade train mlm  --data sentences.txt --model BERT_CONFIG_OR_MODEL --out build/mlm

CMLM (Ghazvininejad et al. 2019): for a target of N tokens pick k ~ Uniform{1..N}, mask k random
positions, predict them (CE on the masked positions) and predict N from the pooled encoder
(weighted by length_loss_weight). `--model` gives the tokenizer (any seq2seq tokenizer dir) or a
CMLM folder to continue from. MLM: the usual 15 % masking (80 % [MASK], 10 % random, 10 % kept,
transformers' DataCollatorForLanguageModeling) on the source side (-p field=target for the other).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from stages.training.mt_recipe import has_weights, hf_saver, read_dev, read_training_pairs
from stages.training.recipe_options import RecipeOptions
from stages.training.train_data import Pair, read_texts
from stages.training.train_eval import bleu
from stages.training.train_loop import Trainee, fit


class CMLMOptions(RecipeOptions):
    d_model: int = Field(160, ge=8)
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    ffn: int = Field(640, ge=8)
    max_target_length: int = Field(48, ge=2)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    length_loss_weight: float = Field(0.1, ge=0)
    eval_iterations: int = Field(4, ge=1, description="Mask-Predict iterations T of the dev BLEU")
    length_beam: int = Field(3, ge=1)


class MLMOptions(RecipeOptions):
    field: str = Field("source", description="which text to learn: source, target or a JSONL field")
    mask_prob: float = Field(0.15, gt=0, lt=1)
    max_length: int = Field(64, ge=4)
    from_scratch: bool = False


def cmlm_batch(tokenizer, pairs: list[Pair], max_len: int, mask_id: int, rng: random.Random):
    """(source ids, masked target ids, labels with -100 where not masked, target lengths)."""
    src = tokenizer([p.source for p in pairs], return_tensors="pt", padding=True, truncation=True,
                    max_length=64)["input_ids"]
    targets = [tokenizer(p.target, add_special_tokens=False)["input_ids"][:max_len] or [tokenizer.unk_token_id]
               for p in pairs]
    width = max(len(t) for t in targets)
    inputs = torch.full((len(pairs), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for i, t in enumerate(targets):
        n, row = len(t), torch.tensor(t)
        masked = rng.sample(range(n), rng.randint(1, n))  # k ~ Uniform{1..N}
        inputs[i, :n] = row
        inputs[i, masked] = mask_id
        labels[i, masked] = row[masked]
    return src, inputs, labels, torch.tensor([len(t) for t in targets])


def _start_cmlm(opts: CMLMOptions):
    from transformers import AutoTokenizer

    from stages.methods.refinement.cmlm import CMLM, CMLMConfig, CONFIG_FILE, load_cmlm

    if (Path(opts.model) / CONFIG_FILE).exists():
        model, tokenizer = load_cmlm(opts.model)
        return model, tokenizer
    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    torch.manual_seed(opts.seed)
    config = CMLMConfig(vocab_size=len(tokenizer), d_model=opts.d_model, layers=opts.layers, heads=opts.heads,
                        ffn=opts.ffn, max_target_length=opts.max_target_length, pad_token_id=tokenizer.pad_token_id)
    return CMLM(config), tokenizer


def run_cmlm(opts: CMLMOptions, on_step=None) -> dict:
    from stages.methods.refinement.cmlm import save_cmlm
    from stages.methods.refinement.mask_predict_steps import mask_predict

    pairs, dev = read_training_pairs(opts), read_dev(opts)
    model, tokenizer = _start_cmlm(opts)
    model.to(opts.torch_device())
    mask_id, max_len = model.config.mask_token_id, model.config.max_target_length

    def loss(m, batch: list[Pair], step: int) -> torch.Tensor:
        rng = random.Random(f"{opts.seed}:{step}")  # the masks of step s are the same after a resume
        src, inp, labels, lengths = (t.to(m.device) for t in cmlm_batch(tokenizer, batch, max_len, mask_id, rng))
        logits, length_logits = m(src, inp)
        token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                     label_smoothing=opts.label_smoothing)
        return token_loss + opts.length_loss_weight * F.cross_entropy(length_logits, lengths.clamp(max=max_len))

    def evaluate(m) -> dict:
        states = mask_predict(m, tokenizer, [p.source for p in dev], iterations=opts.eval_iterations,
                              length_beam=opts.length_beam)
        return {f"dev_bleu_T{opts.eval_iterations}": round(bleu([s.output for s in states],
                                                                [p.target for p in dev]), 2)}

    trainee = Trainee(model, loss, save=lambda m, folder: save_cmlm(m, tokenizer, folder),
                      evaluate=evaluate if dev else None)
    return fit(trainee, pairs, opts.loop(), opts.out, on_step=on_step).as_dict()


def _start_mlm(opts: MLMOptions):
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(opts.model)
    if tokenizer.mask_token is None:
        raise ValueError(f"the tokenizer of {opts.model} has no mask token: an MLM needs one")
    if has_weights(opts.model) and not opts.from_scratch:
        return AutoModelForMaskedLM.from_pretrained(opts.model, dtype=torch.float32), tokenizer
    torch.manual_seed(opts.seed)
    return AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(opts.model)), tokenizer


def run_mlm(opts: MLMOptions, on_step=None) -> dict:
    from transformers import DataCollatorForLanguageModeling

    texts = read_texts(opts.data, opts.field, opts.split)
    dev = read_texts(opts.dev, opts.field)[: opts.dev_size] if opts.dev else None
    model, tokenizer = _start_mlm(opts)
    model.to(opts.torch_device())
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=opts.mask_prob, return_tensors="pt")

    def masked(batch: list[str], device) -> dict:
        enc = tokenizer(batch, truncation=True, max_length=opts.max_length)
        features = [{"input_ids": ids} for ids in enc["input_ids"]]
        return {k: v.to(device) for k, v in collator(features).items()}

    def loss(m, batch: list[str], step: int) -> torch.Tensor:
        return m(**masked(batch, m.device)).loss  # the loop seeds torch per step: masks repeat on resume

    @torch.no_grad()
    def evaluate(m) -> dict:
        torch.manual_seed(123)
        enc = masked(dev, m.device)
        labels = enc.pop("labels")
        keep = labels != -100
        accuracy = (m(**enc).logits.argmax(-1)[keep] == labels[keep]).float().mean()
        return {"dev_masked_accuracy": round(float(accuracy), 4)}

    trainee = Trainee(model, loss, save=hf_saver(tokenizer), evaluate=evaluate if dev else None)
    return fit(trainee, texts, opts.loop(), opts.out, on_step=on_step).as_dict()
