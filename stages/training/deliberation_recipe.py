"""Recipe `deliberation`: the second pass of stages/deliberate.py, trained on `source </s> draft` -> target.

    cascade train deliberation --data train.jsonl --model MT_START --out build/second-pass -p first_pass=DRAFTER

Each training pair gets one kind of draft, drawn with the `draft_*` shares: the first-pass
model's greedy translation (`first_pass`, any seq2seq folder), a word-noised copy of the
reference (drop / replace / swap / repeat), the clean reference (learn to keep a good draft) or
nothing (the stage also runs without a draft). Drafts are cut to fit the second pass's positions
the way the stage cuts them (`fit_draft`); the separator is the second pass's EOS, the stage's
default. The drafts land in `drafts.jsonl` (source, draft, target, kind).
"""
from __future__ import annotations

import json
import random

from pydantic import BaseModel, Field, model_validator

from stages.training.mt_recipe import MTOptions, load_seq2seq_start, read_dev, read_training_pairs, train_seq2seq
from stages.training.train_data import Pair
from stages.training.train_eval import translate

DRAFT_KINDS = ("first_pass", "corrupted", "clean", "empty")


class Corruption(BaseModel):
    drop: float = 0.1
    replace: float = 0.1
    swap: float = 0.05
    repeat: float = 0.05


class DeliberationOptions(MTOptions):
    first_pass: str | None = Field(None, description="the drafting model (needed when draft_first_pass > 0)")
    draft_first_pass: float = Field(0.5, ge=0)
    draft_corrupted: float = Field(0.3, ge=0)
    draft_clean: float = Field(0.1, ge=0)
    draft_empty: float = Field(0.1, ge=0)
    corruption: Corruption = Corruption()

    @model_validator(mode="after")
    def _drafter(self):
        if self.draft_first_pass > 0 and not self.first_pass:
            raise ValueError("give the drafting model (-p first_pass=DIR) or set -p draft_first_pass=0")
        if sum(self.shares()) <= 0:
            raise ValueError("the draft_* shares sum to 0")
        return self

    def shares(self) -> list[float]:
        return [getattr(self, f"draft_{k}") for k in DRAFT_KINDS]


def corrupt(text: str, vocabulary: list[str], c: Corruption, rng: random.Random) -> str:
    """Word-level noise on a reference: roughly what a weak first pass gets wrong."""
    out: list[str] = []
    for word in text.split():
        r = rng.random()
        if r < c.drop:
            continue
        if r < c.drop + c.replace:
            out.append(rng.choice(vocabulary))
        elif r < c.drop + c.replace + c.repeat:
            out += [word, word]
        else:
            out.append(word)
    for i in range(len(out) - 1):
        if rng.random() < c.swap:
            out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def first_pass_drafts(path: str, sources: list[str]) -> list[str]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tok = AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    return translate(model, tok, sources, num_beams=1)  # greedy: fast, and the errors a second pass should fix


def make_drafts(opts: DeliberationOptions, pairs: list[Pair], tokenizer, limit: int) -> list[dict]:
    from stages.methods.refinement.second_pass import fit_draft

    rng = random.Random(opts.seed)
    kinds = rng.choices(DRAFT_KINDS, weights=opts.shares(), k=len(pairs))
    need = [i for i, k in enumerate(kinds) if k == "first_pass"]
    drafted = dict(zip(need, first_pass_drafts(opts.first_pass, [pairs[i].source for i in need]) if need else []))
    vocabulary = sorted({w for p in pairs for w in p.target.split()})
    rows = []
    for i, (pair, kind) in enumerate(zip(pairs, kinds)):
        draft = {"first_pass": lambda: drafted[i], "clean": lambda: pair.target, "empty": lambda: "",
                 "corrupted": lambda: corrupt(pair.target, vocabulary, opts.corruption, rng)}[kind]()
        draft = fit_draft(tokenizer, pair.source, draft, tokenizer.eos_token, limit)
        rows.append({"source": pair.source, "draft": draft, "target": pair.target, "kind": kind})
    return rows


def run(opts: DeliberationOptions, on_step=None) -> dict:
    from stages.methods.refinement.second_pass import fit_draft, join_source_draft

    pairs, dev = read_training_pairs(opts), read_dev(opts)
    model, tokenizer = load_seq2seq_start(opts.model, opts.from_scratch, opts.seed)
    limit = min(opts.max_length, getattr(model.config, "max_position_embeddings", opts.max_length))
    sep = tokenizer.eos_token
    rows = make_drafts(opts, pairs, tokenizer, limit)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "drafts.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    joined = [Pair(join_source_draft(r["source"], r["draft"], sep), r["target"]) for r in rows]
    if dev:  # dev BLEU of the second pass over the first pass's drafts (or over empty drafts)
        drafts = first_pass_drafts(opts.first_pass, [p.source for p in dev]) if opts.first_pass else [""] * len(dev)
        dev = [Pair(join_source_draft(p.source, fit_draft(tokenizer, p.source, d, sep, limit), sep), p.target)
               for p, d in zip(dev, drafts)]
    result = train_seq2seq(model, tokenizer, joined, opts, dev=dev, on_step=on_step)
    kinds = {k: sum(r["kind"] == k for r in rows) for k in DRAFT_KINDS}
    return {**result.as_dict(), "draft_kinds": kinds}
