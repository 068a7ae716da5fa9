"""Training flows for ensemble members: bagging (K bootstrap resamples) and checkpoint series.

    python -m experiments.train_members bagging --k 5 --out build/members
    python -m experiments.train_members checkpoints --out build/members/ckpt

Members are deliberately weaker than the demo MT model (smaller, less data), so
an ensemble has room to help. All members share the demo MT tokenizer (an
ensemble combines distributions over one vocabulary): each starts from a fresh
random model saved with that tokenizer, then trains with `train_mt`.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from demo.demo_grammar import generate
from demo.train_demo_mt import LOAD_LOCK, MTSize, MTTrainConfig, build_model, train_mt

ROOT = Path(__file__).resolve().parents[1]
DEMO_MT = ROOT / "assets" / "models" / "mt-en-de"
WEAK = MTSize(d_model=96, layers=2, heads=4, ffn=256, vocab_size=0, max_positions=64)


def fresh_start(out_dir: Path, size: MTSize, seed: int) -> Path:
    """A random model of `size` with the demo tokenizer: training from it is training from scratch."""
    with LOAD_LOCK:  # transformers' lazy imports, loading and init are not thread-safe
        import torch
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(DEMO_MT)
        torch.manual_seed(seed)
        model = build_model(tok, size)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
    return out_dir


@task(name="train-member", persist_result=False)
def train_member(k: int, out: str, n_pairs: int, epochs: float, bootstrap: bool, save_every: int | None = None,
                 size: dict | None = None) -> dict:
    size_ = MTSize(**(size or WEAK.model_dump()))
    base = generate("train", n_pairs, seed=0)
    rng = random.Random(1000 + k)
    pairs = [base[rng.randrange(len(base))] for _ in base] if bootstrap else base
    start = fresh_start(Path(out) / f"init-{k}", size_, seed=k)
    cfg = MTTrainConfig(out_dir=Path(out) / f"member-{k}", size=size_, n_pairs=n_pairs, seed=k, epochs=epochs,
                        init_from=start, threads=1, save_every=save_every, warmup=100)
    result = train_mt(cfg, pairs=pairs)
    return {"k": k, **result, "unique_pairs": len(set(pairs))}


@flow(name="train-bagged-members", persist_result=False)
def bagging(k: int = 5, out: str = "build/members/bag", n_pairs: int = 2000, epochs: float = 24.0,
            only: list[int] | None = None) -> list[dict]:
    """K members, each on its own bootstrap resample, as mapped Prefect tasks (`only`: just these indices)."""
    indices = [i for i in range(k) if only is None or i in only]
    futures = train_member.map(indices, out=out, n_pairs=n_pairs, epochs=epochs, bootstrap=True)
    return [f.result() for f in futures]


@flow(name="train-checkpoint-series", persist_result=False)
def checkpoints(out: str = "build/members/ckpt", n_pairs: int = 2000, epochs: float = 24.0,
                save_every: int = 150) -> dict:
    """One member, saving `checkpoint-STEP` folders along the way (for checkpoint ensembles and averaging)."""
    return train_member.submit(0, out=out, n_pairs=n_pairs, epochs=epochs, bootstrap=False,
                               save_every=save_every).result()


def checkpoint_dirs(member_dir: Path) -> list[Path]:
    return sorted(member_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("what", choices=["bagging", "checkpoints"])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default=None)
    # 2000 pairs × 24 epochs gives dev BLEU ~66 per member (the demo model: ~100); 6000 × 16 gave ~97,
    # too close to the ceiling for an ensemble to show anything, and 6000 × 4 gave ~6.
    ap.add_argument("--n-pairs", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=24.0)
    ap.add_argument("--save-every", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None, help="bagging: train just these member indices, e.g. 1,4")
    args = ap.parse_args()
    runner = ThreadPoolTaskRunner(max_workers=args.workers)
    if args.what == "bagging":
        only = [int(i) for i in args.only.split(",")] if args.only else None
        res = bagging.with_options(task_runner=runner)(args.k, args.out or "build/members/bag", args.n_pairs,
                                                       args.epochs, only)
    else:
        res = checkpoints.with_options(task_runner=runner)(args.out or "build/members/ckpt", args.n_pairs,
                                                           args.epochs, args.save_every)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
