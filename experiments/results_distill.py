"""Distillation on the demo task: how much of the ensemble's gain does a one-member-sized student keep?

    python -m experiments.results_distill [--sentences 300] [--beams 4]

Needs the models of `experiments/train_distill.py` (data-only baseline, word-level
and sequence-level students) and the bagged teacher members; it trains
nothing and says which command to run when a model is missing. Every system
decodes the first N held-out test sentences with the same ensemble beam
search (a student is a one-member ensemble, which equals its `generate`).
gain = teacher BLEU − data-only BLEU; kept = (student − data-only) / gain.
Prints a table, then a JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import print_json_line, print_table
from flows.metrics import bleu
from demo.demo_grammar import read_tsv
from experiments.train_distill import TEACHER_COMMAND, teacher_digest

ROOT = Path(__file__).resolve().parents[1]
DISTILL = ROOT / "build" / "distill"
TEACHER = ROOT / "build" / "members" / "bag"
TRAIN = "python -m experiments.train_distill"
TEACHER_TRAIN = f"flock build/train.lock .venv/bin/{TEACHER_COMMAND}"


def require(path: Path, command: str) -> Path:
    if not (path / "config.json").exists():
        raise SystemExit(f"results_distill: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} is "
                         f"missing; train it first with `{command}`")
    return path


def recipe(path: Path) -> dict:
    f = path / "distill.json"
    return json.loads(f.read_text()) if f.exists() else {}


def kept(student: float, data_only: float, teacher: float) -> float | None:
    gain = teacher - data_only
    return round((student - data_only) / gain, 3) if gain > 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--distill", default=str(DISTILL))
    ap.add_argument("--teacher", default=str(TEACHER))
    args = ap.parse_args()
    from stages.methods.ensembling import ensemble_generate, load_member

    torch.set_num_threads(2)
    out, teacher_dir = Path(args.distill), Path(args.teacher)
    members_dirs = [require(teacher_dir / f"member-{i}", TEACHER_TRAIN) for i in range(args.k)]
    data_only = require(out / "data-only", f"{TRAIN} data-only")
    seq = require(out / "seq-kd", f"{TRAIN} sequence")
    require(out / "word-kd", f"{TRAIN} word")
    words = sorted(p for p in out.glob("word-kd*") if (p / "config.json").exists())

    test = read_tsv(ROOT / "assets/demo/corpus/test.tsv")[: args.sentences]
    src, ref = [e for e, _ in test], [d for _, d in test]
    load = lambda p: load_member(p, device="cpu", name=p.name)  # noqa: E731
    members = [load(p) for p in members_dirs]
    rows, bleus, seconds = [], {}, {}

    def score(name: str, ms, cost: int, trained: dict | None = None) -> float:
        start = time.perf_counter()
        hyps = []
        for b in range(0, len(src), 50):
            hyps += [n[0].text for n in ensemble_generate(ms, src[b:b + 50], num_beams=args.beams,
                                                          max_new_tokens=60)]
        seconds[name] = round(time.perf_counter() - start, 2)
        bleus[name] = round(bleu(hyps, ref), 2)
        trained = trained or {}
        dev = trained.get("dev_bleu")
        rows.append([name, bleus[name], cost, seconds[name], trained.get("steps", ""),
                     round(trained["seconds"]) if "seconds" in trained else "",
                     round(dev, 2) if dev is not None else ""])
        return bleus[name]

    teacher = score(f"teacher: linear ensemble of {len(members)}", members, len(members))
    member_bleus = [score(f"member {i} (bagged)", [m], 1) for i, m in enumerate(members)]
    base = score("data-only student", [load(data_only)], 1, recipe(data_only))
    word_scores = {}
    for p in words:
        r = recipe(p)
        label = f"word-KD student α={r.get('alpha', '?')} T={r.get('temperature', '?')}"
        word_scores[p.name] = (score(label, [load(p)], 1, r), r.get("dev_bleu", float("-inf")), r)
    # The reported word-level student is chosen on dev BLEU, never on the test figures above.
    chosen = max(word_scores, key=lambda n: word_scores[n][1])
    word = word_scores[chosen][0]
    seq_recipe = recipe(seq)
    seq_bleu = score("seq-KD student", [load(seq)], 1, seq_recipe)
    # Students trained against other teacher weights than the ones scored here would make `kept` meaningless.
    digest = teacher_digest(members_dirs)
    stale = sorted({p.name for p, r in [(seq, seq_recipe), *[(p, word_scores[p.name][2]) for p in words]]
                    if r.get("teacher_digest") not in (None, digest)})
    if stale:
        print(f"WARNING: the teacher in {teacher_dir} changed after {', '.join(stale)} were trained; retrain them")

    print_table(f"Distillation: BLEU on {len(src)} test sentences, beam {args.beams}",
                ["system", "BLEU", "cost ×member", "decode s", "steps", "train s", "dev BLEU"], rows)
    gain = round(teacher - base, 2)
    print_json_line({
        "teacher_bleu": teacher, "data_only_bleu": base, "word_kd_bleu": word, "seq_kd_bleu": seq_bleu,
        "best_member_bleu": max(member_bleus), "ensemble_gain": gain,
        "word_kd_kept": kept(word, base, teacher), "seq_kd_kept": kept(seq_bleu, base, teacher),
        "word_kd_choice": chosen, "word_kd_alpha": word_scores[chosen][2].get("alpha"),
        "word_kd_temperature": word_scores[chosen][2].get("temperature"),
        "word_kd_variants": {n: v[0] for n, v in word_scores.items()},
        "seq_corpus_same_as_gold": seq_recipe.get("same_as_gold"),
        "teacher_decode_s": seconds[rows[0][0]], "student_decode_s": seconds[rows[-1][0]],
        "sentences": len(src), "stale_students": stale,
        "setup": {"k": len(members), "beams": args.beams, "student_steps": recipe(data_only).get("steps")},
    })


if __name__ == "__main__":
    main()
