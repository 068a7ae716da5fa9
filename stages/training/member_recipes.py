"""Recipes for ensemble members: `bagged` (K bootstrap resamples) and `checkpoints` (one run's series).

    cascade train bagged --data train.jsonl --model CONFIG_OR_MODEL --out build/bag -p k=5
    cascade train checkpoints --data train.jsonl --model CONFIG_OR_MODEL --out build/ckpt --save-every 200

Both write `members.json` (the member folders, in order), ready for an `ensemble` stage. Bagged
member i trains on its own resample (seeded by bootstrap_seed + i) with seed + i, so from a
config dir each member also starts from its own random init. A rerun skips finished members
and resumes the unfinished one.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from pydantic import Field

from stages.training.mt_recipe import MTOptions, load_seq2seq_start, read_dev, read_training_pairs, train_seq2seq
from stages.training.train_loop import checkpoint_dirs


class BaggedOptions(MTOptions):
    k: int = Field(5, ge=1, description="number of members")
    bootstrap_seed: int = 1000


class CheckpointOptions(MTOptions):
    save_every: int = Field(200, ge=1, description="a member every this many steps")


def bootstrap(pairs: list, seed: int) -> list:
    """A resample with replacement of the same size."""
    rng = random.Random(seed)
    return [pairs[rng.randrange(len(pairs))] for _ in pairs]


def _finished(folder: Path, steps: int) -> bool:
    log = folder / "train.json"
    return log.exists() and json.loads(log.read_text())["steps"] >= steps


def run_bagged(opts: BaggedOptions, on_step=None) -> dict:
    pairs, dev = read_training_pairs(opts), read_dev(opts)
    members = []
    for i in range(opts.k):
        folder = opts.out / f"member-{i}"
        member = {"member": str(folder), "unique_pairs": None}
        if not _finished(folder, opts.steps):
            sample = bootstrap(pairs, opts.bootstrap_seed + i)
            member_opts = opts.model_copy(update={"seed": opts.seed + i, "out": folder})
            model, tokenizer = load_seq2seq_start(opts.model, opts.from_scratch, opts.seed + i)
            result = train_seq2seq(model, tokenizer, sample, member_opts, dev=dev,
                                   on_step=on_step and (lambda s, t, v, i=i: on_step(i * t + s, opts.k * t, v)))
            member.update(unique_pairs=len(set(sample)), steps=result.steps, evals=result.evals)
        members.append(member)
    (opts.out / "members.json").write_text(json.dumps({"members": [m["member"] for m in members]}, indent=2) + "\n")
    return {"out_dir": str(opts.out), "members": members}


def run_checkpoints(opts: CheckpointOptions, on_step=None) -> dict:
    pairs, dev = read_training_pairs(opts), read_dev(opts)
    model, tokenizer = load_seq2seq_start(opts.model, opts.from_scratch, opts.seed)
    result = train_seq2seq(model, tokenizer, pairs, opts, dev=dev, on_step=on_step)
    members = [str(p) for p in checkpoint_dirs(opts.out)] + [str(opts.out)]
    (opts.out / "members.json").write_text(json.dumps({"members": members}, indent=2) + "\n")
    return {**result.as_dict(), "members": members}
