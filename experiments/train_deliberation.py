"""Training flow for the deliberation second pass (stages/deliberate.py) on the demo grammar.

    python -m experiments.train_deliberation --out build/deliberation
    python -m experiments.train_deliberation --out /tmp/delib --weak-steps 20 --steps 20 --pairs 300 --dev 20  # smoke

1. first pass   a deliberately weak EN->DE model (small, trained briefly on
                other data), so its drafts carry the errors a second pass
                should learn to fix; or `--first-pass DIR` to draft with any model
2. drafts       every training source gets a draft: the weak model's
                translation, a token-corrupted reference (drop / replace /
                swap / repeat words), the clean reference (learn to keep good
                drafts) or nothing (the stage must also work without a draft)
3. second pass  a Marian model of the demo size with the demo tokenizer,
                trained on `join_source_draft(source, draft, "</s>")` -> reference
4. evaluation   dev BLEU of the first-pass drafts, of the second pass over
                them, and of the second pass with empty drafts -> eval.json
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from pydantic import BaseModel

from prefect import flow, task
from demo.demo_grammar import generate, read_tsv
from experiments.train_members import WEAK, fresh_start
from demo.train_demo_mt import MTSize, MTTrainConfig, bleu, translate, train_mt
from stages.methods.refinement.second_pass import fit_draft, join_source_draft

ROOT = Path(__file__).resolve().parents[1]
DEMO_MT = ROOT / "assets" / "models" / "mt-en-de"
DEV_TSV = ROOT / "assets" / "demo" / "corpus" / "dev.tsv"
SEP = "</s>"  # the demo tokenizer's EOS: the stage's default separator


class DraftMix(BaseModel):
    """Share of training items per kind of draft (normalised)."""

    first_pass: float = 0.5
    corrupted: float = 0.3
    clean: float = 0.1
    empty: float = 0.1


class Corruption(BaseModel):
    drop: float = 0.1
    replace: float = 0.1
    swap: float = 0.05
    repeat: float = 0.05


class DeliberationTrainConfig(BaseModel):
    out_dir: Path = Path("build/deliberation")
    first_pass: Path | None = None  # None: train a weak one into out_dir/first-pass
    weak_pairs: int = 6000
    weak_steps: int = 600  # 300 left the drafts at ~2 dev BLEU: nothing for a second pass to read
    n_pairs: int = 30_000
    data_seed: int = 0
    mix: DraftMix = DraftMix()
    corruption: Corruption = Corruption()
    size: MTSize = MTSize()  # the demo MT size
    epochs: float = 2.0
    max_steps: int | None = None
    max_minutes: float = 1e9
    threads: int = 2
    dev_sentences: int = 200
    seed: int = 0


def corrupt(text: str, vocabulary: list[str], c: Corruption, rng: random.Random) -> str:
    """Word-level noise on a reference: what a weak first pass gets wrong, roughly."""
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


@task(name="train-first-pass", persist_result=False)
def train_first_pass(cfg: DeliberationTrainConfig) -> str:
    """A small model trained briefly, on pairs of another seed: fluent-ish drafts with real errors."""
    out = cfg.out_dir / "first-pass"
    start = fresh_start(cfg.out_dir / "first-pass-init", WEAK, seed=cfg.seed + 100)
    pairs = generate("train", cfg.weak_pairs, seed=cfg.data_seed + 1)
    train_mt(MTTrainConfig(out_dir=out, size=WEAK, init_from=start, max_steps=cfg.weak_steps, seed=cfg.seed + 100,
                           warmup=min(100, cfg.weak_steps), threads=cfg.threads, dev_sentences=cfg.dev_sentences),
             pairs=pairs)
    return str(out)


def _load(path: str | Path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@task(name="make-drafts", persist_result=False)
def make_drafts(cfg: DeliberationTrainConfig, first_pass: str) -> str:
    """training.tsv: source, draft, reference, kind. The drafting model decodes greedily (fast, and weaker)."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    pairs = generate("train", cfg.n_pairs, seed=cfg.data_seed)
    kinds = rng.choices(list(DraftMix.model_fields), weights=list(cfg.mix.model_dump().values()), k=len(pairs))
    need = [i for i, k in enumerate(kinds) if k == "first_pass"]
    model, tok = _load(first_pass)
    drafted = dict(zip(need, translate(model, tok, [pairs[i][0] for i in need], num_beams=1)))
    vocabulary = sorted({w for _, de in pairs for w in de.split()})
    demo_tok = AutoTokenizer.from_pretrained(DEMO_MT)  # the second pass's tokenizer (fresh_start copies it)
    rows = []
    for i, ((en, de), kind) in enumerate(zip(pairs, kinds)):
        if kind == "first_pass":
            draft = drafted[i]
        elif kind == "corrupted":
            draft = corrupt(de, vocabulary, cfg.corruption, rng)
        else:
            draft = de if kind == "clean" else ""
        # a rambling draft (or a long corrupted one) must not push the joined input past the positions
        draft = fit_draft(demo_tok, en, draft.replace("\t", " "), SEP, cfg.size.max_positions)
        rows.append("\t".join([en, draft, de, kind]))
    path = cfg.out_dir / "training.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@task(name="train-second-pass", persist_result=False)
def train_second_pass(cfg: DeliberationTrainConfig, drafts_tsv: str) -> dict:
    rows = [line.split("\t") for line in Path(drafts_tsv).read_text().splitlines()]
    pairs = [(join_source_draft(en, draft, SEP), de) for en, draft, de, _ in rows]
    start = fresh_start(cfg.out_dir / "second-pass-init", cfg.size, seed=cfg.seed)
    return train_mt(MTTrainConfig(out_dir=cfg.out_dir / "second-pass", size=cfg.size, init_from=start,
                                  epochs=cfg.epochs, max_steps=cfg.max_steps, max_minutes=cfg.max_minutes,
                                  seed=cfg.seed, threads=cfg.threads, dev_sentences=cfg.dev_sentences), pairs=pairs)


@task(name="evaluate-deliberation", persist_result=False)
def evaluate(cfg: DeliberationTrainConfig, first_pass: str) -> dict:
    import torch

    torch.set_num_threads(cfg.threads)
    dev = read_tsv(DEV_TSV)[: cfg.dev_sentences]
    sources, refs = [en for en, _ in dev], [de for _, de in dev]
    first, first_tok = _load(first_pass)
    drafts = translate(first, first_tok, sources, num_beams=1)
    second, tok = _load(cfg.out_dir / "second-pass")
    limit = second.config.max_position_embeddings
    refined = translate(second, tok, [join_source_draft(s, fit_draft(tok, s, d, SEP, limit), SEP)
                                      for s, d in zip(sources, drafts)])
    no_draft = translate(second, tok, [join_source_draft(s, "", SEP) for s in sources])
    result = {"dev_bleu_first_pass": round(bleu(drafts, refs), 2),
              "dev_bleu_deliberation": round(bleu(refined, refs), 2),
              "dev_bleu_empty_draft": round(bleu(no_draft, refs), 2),
              "first_pass": first_pass, "second_pass": str(cfg.out_dir / "second-pass")}
    (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


@flow(name="train-deliberation", persist_result=False)
def train_deliberation(cfg: DeliberationTrainConfig = DeliberationTrainConfig()) -> dict:
    first_pass = str(cfg.first_pass) if cfg.first_pass else train_first_pass.submit(cfg).result()
    drafts = make_drafts.submit(cfg, first_pass).result()
    trained = train_second_pass.submit(cfg, drafts).result()
    return {"second_pass_training": trained, **evaluate.submit(cfg, first_pass).result()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/deliberation")
    ap.add_argument("--first-pass", default=None, help="draft with this model instead of training a weak one")
    ap.add_argument("--weak-steps", type=int, default=600)
    ap.add_argument("--pairs", type=int, default=30_000)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=None, help="second-pass steps (overrides --epochs)")
    ap.add_argument("--max-minutes", type=float, default=1e9)
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cfg = DeliberationTrainConfig(out_dir=Path(args.out), first_pass=Path(args.first_pass) if args.first_pass else None,
                                  weak_steps=args.weak_steps, n_pairs=args.pairs, epochs=args.epochs,
                                  max_steps=args.steps, max_minutes=args.max_minutes, dev_sentences=args.dev,
                                  threads=args.threads)
    print(json.dumps(train_deliberation(cfg)))


if __name__ == "__main__":
    main()
