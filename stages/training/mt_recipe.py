"""Recipe `mt`: fine-tune a seq2seq model on the user's pairs, or train one from a config + tokenizer dir.

    cascade train mt --data train.jsonl --model Helsinki-NLP/opus-mt-en-de --out build/mt --steps 2000
    cascade train mt --data train.tsv --model my-config-dir --out build/mt -p from_scratch=true

`--model` is any `from_pretrained` name or folder. A folder holding a config and a
tokenizer but no weights (or `-p from_scratch=true`) starts from random weights of that
config. The other seq2seq recipes build on the pieces here (start, loss, save, BLEU hook).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from stages.training.recipe_options import RecipeOptions
from stages.training.train_data import Pair, read_pairs, seq2seq_batch
from stages.training.train_eval import bleu, translate
from stages.training.train_loop import Trainee, TrainResult, fit

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class MTOptions(RecipeOptions):
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(128, ge=2, description="tokens kept per source / target")
    from_scratch: bool = Field(False, description="random weights from --model's config even if it has weights")
    save_dtype: Literal["float32", "float16"] = Field("float32", description="dtype of the saved weights")
    dev_beams: int | None = Field(None, ge=1, description="beams for the dev BLEU (None: the model's default)")


def has_weights(name_or_path: str) -> bool:
    """A local folder without weight files is a config + tokenizer to start from scratch; hub names have weights."""
    path = Path(name_or_path)
    return not path.is_dir() or any((path / f).exists() for f in WEIGHT_FILES)


def load_seq2seq_start(name_or_path: str, from_scratch: bool = False, seed: int = 0):
    """(model in fp32, tokenizer): pretrained weights, or random ones of that config (seeded)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if has_weights(name_or_path) and not from_scratch:
        return AutoModelForSeq2SeqLM.from_pretrained(name_or_path, dtype=torch.float32), tokenizer
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(name_or_path), dtype=torch.float32)
    if (Path(name_or_path) / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(name_or_path)
    return model, tokenizer


def hf_saver(tokenizer, dtype: str = "float32") -> Callable[[torch.nn.Module, Path], None]:
    """save_pretrained (safetensors) + tokenizer; float16 weights keep `dtype: float32` in the config,
    so a default load on CPU still runs in fp32."""
    def save(model: torch.nn.Module, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if dtype == "float16":
            model.to(torch.float16).save_pretrained(folder)
            model.to(torch.float32)
            config = json.loads((folder / "config.json").read_text())
            config["dtype"] = "float32"
            (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        else:
            model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return save


def cross_entropy_loss(tokenizer, max_length: int, label_smoothing: float):
    """The plain seq2seq loss on gold targets (padding ignored)."""
    def loss(model, pairs: list[Pair], step: int) -> torch.Tensor:
        batch = seq2seq_batch(tokenizer, pairs, max_length, model.device)
        logits = model(**batch).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                               ignore_index=-100, label_smoothing=label_smoothing)
    return loss


def bleu_hook(tokenizer, dev: list[Pair] | None, beams: int | None = None):
    if not dev:
        return None

    def evaluate(model) -> dict:
        hyps = translate(model, tokenizer, [p.source for p in dev], num_beams=beams)
        return {"dev_bleu": round(bleu(hyps, [p.target for p in dev]), 2)}
    return evaluate


def read_dev(opts: RecipeOptions) -> list[Pair] | None:
    if opts.dev is None:
        return None
    return read_pairs(opts.dev, opts.source_field, opts.target_field, limit=opts.dev_size)


def train_seq2seq(model, tokenizer, pairs: list[Pair], opts: MTOptions, out: Path | None = None, loss=None,
                  dev: list[Pair] | None = None, on_step=None, first_step: int = 0, save=None) -> TrainResult:
    """Train `model` on `pairs` with the options' loop settings; `loss` replaces plain cross-entropy."""
    model.to(opts.torch_device())
    trainee = Trainee(model=model,
                      loss=loss or cross_entropy_loss(tokenizer, opts.max_length, opts.label_smoothing),
                      save=save or hf_saver(tokenizer, opts.save_dtype),
                      evaluate=bleu_hook(tokenizer, dev, opts.dev_beams))
    return fit(trainee, pairs, opts.loop(), out or opts.out, on_step=on_step, first_step=first_step)


def read_training_pairs(opts: RecipeOptions) -> list[Pair]:
    return read_pairs(opts.data, opts.source_field, opts.target_field, opts.split)


def run(opts: MTOptions, on_step=None) -> dict:
    pairs, dev = read_training_pairs(opts), read_dev(opts)  # data errors before any model is loaded
    model, tokenizer = load_seq2seq_start(opts.model, opts.from_scratch, opts.seed)
    return train_seq2seq(model, tokenizer, pairs, opts, dev=dev, on_step=on_step).as_dict()
