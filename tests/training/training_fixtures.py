"""Tiny data and models for the training-layer tests: a few dozen pairs, one-layer random Marians."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stages.testing.tiny_checkpoints import MARIAN_MEMBER, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer, toy_corpus


def save_tiny_marian(path, tokenizer, **options):
    """A random Marian member as the ensemble tests build them (tiny_checkpoints.MARIAN_MEMBER settings)."""
    return save_marian(path, tokenizer, **{**MARIAN_MEMBER, **options})


def reverse_words(text: str) -> str:
    return " ".join(reversed(text.split()))


def write_jsonl(path: Path, pairs, source_field: str = "source", target_field: str = "target") -> Path:
    path.write_text("".join(json.dumps({source_field: s, target_field: t}) + "\n" for s, t in pairs))
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """train.jsonl (32 pairs: a sentence -> its words reversed), dev.jsonl (6), a start model and a config dir."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("training")
    tok = bpe_tokenizer("metaspace", 120)
    sources = toy_corpus(38, seed=3)
    pairs = [(s, reverse_words(s)) for s in sources]
    start = save_tiny_marian(root / "start", tok, seed=0, d_model=32, ffn=64)
    config_only = root / "config-only"
    config_only.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (start / name).exists():
            (config_only / name).write_bytes((start / name).read_bytes())
    return {"root": root, "tokenizer": tok, "pairs": pairs[:32],
            "train": write_jsonl(root / "train.jsonl", pairs[:32]), "dev": write_jsonl(root / "dev.jsonl", pairs[32:]),
            "start": start, "config_only": config_only}


def first_and_last_loss(result: dict) -> tuple[float, float]:
    losses = [entry["loss"] for entry in result["losses"]]
    return losses[0], losses[-1]
