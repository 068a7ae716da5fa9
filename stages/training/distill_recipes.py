"""Distillation recipes from an ensemble teacher (Hinton et al. 2015; Kim & Rush 2016).

    cascade train word-kd --data train.jsonl --model STUDENT --out build/word-kd -p teacher=m0,m1,m2
    cascade train seq-kd  --data train.jsonl --model STUDENT --out build/seq-kd  -p teacher=m0,m1,m2

word-kd: loss = α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE on the gold target, the teacher
being the members' combined distribution (stages/training/word_kd.py). seq-kd: the teacher
beam-decodes every training source (one member: its own `generate`; several: the ensemble
search) into `distilled.jsonl`, and the student trains on those outputs instead of the gold
targets. A rerun reuses `distilled.jsonl` when it was made from the same sources.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from stages.training.mt_recipe import MTOptions, load_seq2seq_start, read_dev, read_training_pairs, train_seq2seq
from stages.training.recipe_options import split_list
from stages.training.train_data import Pair, seq2seq_batch
from stages.training.train_eval import translate


class TeacherOptions(MTOptions):
    teacher: list[str] = Field(..., min_length=1, description="teacher member folders (comma-separated)")
    combiner: Literal["linear", "log_linear"] = "linear"

    _split = field_validator("teacher", mode="before")(split_list)

    @field_validator("teacher")
    @classmethod
    def _exist(cls, dirs: list[str]) -> list[str]:
        missing = [d for d in dirs if not (Path(d) / "config.json").exists()]
        if missing:
            raise ValueError(f"teacher member not found (no config.json): {missing[0]}")
        return dirs


class WordKDOptions(TeacherOptions):
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KD term (1 − α on the gold CE)")
    temperature: float = Field(2.0, gt=0)


class SeqKDOptions(TeacherOptions):
    beams: int = Field(4, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    decode_batch: int = Field(32, ge=1)


def _members(dirs: list[str], device):
    from stages.methods.ensembling import load_member

    return [load_member(d, device=device, name=Path(d).name) for d in dirs]


def run_word_kd(opts: WordKDOptions, on_step=None) -> dict:
    from stages.training.word_kd import EnsembleTeacher, word_kd_loss

    pairs, dev = read_training_pairs(opts), read_dev(opts)
    teacher = EnsembleTeacher(_members(opts.teacher, opts.torch_device()), combiner=opts.combiner,
                              temperature=opts.temperature)
    model, tokenizer = load_seq2seq_start(opts.model, opts.from_scratch, opts.seed)
    if tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise ValueError(f"student {opts.model} and the teacher use different vocabularies; word-level KD "
                         "compares distributions id by id (use seq-kd instead)")

    def loss(student, batch: list[Pair], step: int):
        encoded = seq2seq_batch(tokenizer, batch, opts.max_length, student.device)
        return word_kd_loss(student, teacher, encoded, alpha=opts.alpha, label_smoothing=opts.label_smoothing).loss

    result = train_seq2seq(model, tokenizer, pairs, opts, loss=loss, dev=dev, on_step=on_step)
    return {**result.as_dict(), "teacher": opts.teacher}


def teacher_outputs(opts: SeqKDOptions, sources: list[str]) -> list[str]:
    """The teacher's best beam output for every source."""
    members = _members(opts.teacher, opts.torch_device())
    if len(members) == 1:
        m = members[0]
        return translate(m.model, m.tokenizer, sources, opts.decode_batch, opts.beams, opts.max_new_tokens)
    from stages.methods.ensembling import ensemble_generate

    outputs = []
    for b in range(0, len(sources), opts.decode_batch):
        nbest = ensemble_generate(members, sources[b:b + opts.decode_batch], combiner=opts.combiner,
                                  num_beams=opts.beams, max_new_tokens=opts.max_new_tokens)
        outputs += [n[0].text for n in nbest]
    return outputs


def distilled_pairs(opts: SeqKDOptions, pairs: list[Pair]) -> list[Pair]:
    """Decode (or reuse) `out/distilled.jsonl`: each training source with the teacher's output.

    JSONL, not TSV: a teacher output may be empty, which the user-data readers refuse."""
    path = opts.out / "distilled.jsonl"
    sources = [p.source for p in pairs]
    if path.exists():
        cached = [Pair(r["source"], r["target"]) for r in map(json.loads, path.read_text("utf-8").splitlines())]
        if [p.source for p in cached] == sources:
            return cached
    distilled = [Pair(s, o) for s, o in zip(sources, teacher_outputs(opts, sources))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(p._asdict(), ensure_ascii=False) + "\n" for p in distilled), encoding="utf-8")
    tmp.replace(path)
    return distilled


def run_seq_kd(opts: SeqKDOptions, on_step=None) -> dict:
    pairs, dev = read_training_pairs(opts), read_dev(opts)
    distilled = distilled_pairs(opts, pairs)
    same = sum(d.target == p.target for d, p in zip(distilled, pairs)) / len(pairs)
    model, tokenizer = load_seq2seq_start(opts.model, opts.from_scratch, opts.seed)
    result = train_seq2seq(model, tokenizer, distilled, opts, dev=dev, on_step=on_step)
    summary = {**result.as_dict(), "teacher": opts.teacher, "distilled": str(opts.out / "distilled.jsonl"),
               "same_as_gold": round(same, 4)}
    (opts.out / "distill.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
