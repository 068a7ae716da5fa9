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
                (steps 2 and 3 are `cascade train deliberation`'s recipe,
                stages/training/deliberation_recipe.py; drafts in second-pass/drafts.jsonl)
4. evaluation   dev BLEU of the first-pass drafts, of the second pass over
                them, and of the second pass with empty drafts -> eval.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import BaseModel

from prefect import flow, task
from demo.demo_grammar import generate, read_tsv
from experiments.train_members import WEAK, fresh_start
from demo.train_demo_mt import MTSize, MTTrainConfig, train_mt
from stages.methods.refinement.second_pass import fit_draft, join_source_draft
from stages.training.deliberation_recipe import Corruption
from stages.training.train_eval import bleu, translate

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


@task(name="train-second-pass", persist_result=False)
def train_second_pass(cfg: DeliberationTrainConfig, first_pass: str) -> dict:
    """The grammar's pairs -> `cascade train deliberation`'s recipe (drafts, then the second pass)."""
    import math

    import torch

    from stages.training.deliberation_recipe import DeliberationOptions, run

    torch.set_num_threads(cfg.threads)
    pairs = generate("train", cfg.n_pairs, seed=cfg.data_seed)
    data = cfg.out_dir / "training.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps({"source": en, "target": de}, ensure_ascii=False) + "\n" for en, de in pairs),
                    encoding="utf-8")
    start = fresh_start(cfg.out_dir / "second-pass-init", cfg.size, seed=cfg.seed)
    mt = MTTrainConfig()  # the demo MT's optimiser settings
    steps = cfg.max_steps or int(cfg.epochs * math.ceil(len(pairs) / mt.batch_size))
    mix = {f"draft_{k}": v for k, v in cfg.mix.model_dump().items()}
    return run(DeliberationOptions(
        data=data, model=str(start), out=cfg.out_dir / "second-pass", first_pass=first_pass, corruption=cfg.corruption,
        steps=steps, batch_size=mt.batch_size, lr=mt.lr, warmup=mt.warmup, label_smoothing=mt.label_smoothing,
        max_length=cfg.size.max_positions, seed=cfg.seed, threads=cfg.threads, save_dtype="float16", resume=False,
        max_minutes=cfg.max_minutes if cfg.max_minutes < 1e9 else None, **mix))


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
    trained = train_second_pass.submit(cfg, first_pass).result()
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
