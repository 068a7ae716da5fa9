"""Train the MoE demo MT models and their dense baselines with one fixed, small budget.

Every run sees the same batches in the same order (step s always gets batch s of one shuffled
pass over `steps × batch_size` generated pairs), the same seed, tokenizer (the demo MT's),
optimiser and LR schedule (the training layer's loop, stages/training/train_loop.py: AdamW,
linear warmup, cosine to 2 %). For your own data the same runs are `cascade train moe` and
`cascade train upcycle`.
Runs (architecture: the demo MT's 3+3 Marian layers at d_model 128; all six FFNs sparse in MoE runs):

    dense-f256     dense, FFN 256; its step-S/2 weights are saved as dense-f256-half
    dense-f512     dense, FFN 512   = the MoE's active parameters (top-2 of 256-wide experts)
    dense-f1024    dense, FFN 1024  = the MoE's total parameters (4 experts of 256)
    moe-scratch    4 experts × 256, top-2 renormalised, Switch balance loss + z-loss, random init
    moe-scratch-nobal   the same without the balance loss (z-loss kept)
    moe-upcycled   dense-f256-half upcycled (experts = copies of its FFNs), trained steps S/2..S
    moe-upcycled-nobal  the same without the balance loss

The upcycled runs continue the dense run's LR schedule from step S/2 (fresh optimiser state), so
they spend the same number of steps as every other run and are directly comparable with
dense-f256 (the same dense start, continued densely).

    python -m experiments.train_moe_mt            # all runs, in order
    python -m experiments.train_moe_mt --runs moe-scratch --steps 200

Each run writes build/moe/<run>/ (see stages.methods.moe.moe_marian.save_moe_marian) and train.json there.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from pydantic import BaseModel

from demo.demo_grammar import generate
from demo.train_demo_mt import MTSize, MTTrainConfig, build_model
from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.moe_marian import convert_marian_to_moe, layer_stats, load_moe_marian, moe_aux_loss, save_moe_marian
from stages.training.train_data import Pair, seq2seq_batch
from stages.training.train_loop import LoopConfig, Trainee, fit

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build/moe"
TOKENIZER_DIR = ROOT / "assets/models/mt-en-de"
TRAIN_COMMAND = "python -m experiments.train_moe_mt"
_MT = MTTrainConfig()  # optimiser / schedule / label smoothing defaults shared with train_mt


class Run(BaseModel):
    name: str
    ffn: int = 256
    experts: int | None = None  # None = dense
    top_k: int = 2
    balance: bool = True
    upcycle_from: str | None = None  # run dir (under build/moe) of the dense start; trains S/2..S
    save_half_as: str | None = None


RUNS = {r.name: r for r in [  # in training order: the upcycled runs need dense-f256-half
    Run(name="dense-f256", ffn=256, save_half_as="dense-f256-half"),
    Run(name="moe-scratch", experts=4),
    Run(name="moe-upcycled", experts=4, upcycle_from="dense-f256-half"),
    Run(name="dense-f512", ffn=512),
    Run(name="dense-f1024", ffn=1024),
    Run(name="moe-scratch-nobal", experts=4, balance=False),
    Run(name="moe-upcycled-nobal", experts=4, balance=False, upcycle_from="dense-f256-half"),
]}


class Budget(BaseModel):
    steps: int = 600
    batch_size: int = 64
    d_model: int = 128
    seed: int = 0
    data_seed: int = 0
    warmup: int = 40
    lr: float = _MT.lr
    label_smoothing: float = _MT.label_smoothing
    threads: int = 2
    balance_coef: float = 0.01  # Switch α
    z_coef: float = 0.001


def moe_config(run: Run, budget: Budget) -> MoEConfig:
    return MoEConfig(d_model=budget.d_model, d_ff=run.ffn, n_experts=run.experts, top_k=run.top_k, router="topk",
                     renormalize=True, capacity_factor=None, balance_coef=budget.balance_coef if run.balance else 0.0,
                     z_coef=budget.z_coef)


def training_pairs(budget: Budget) -> list[tuple[str, str]]:
    """One pass of steps × batch_size pairs; the loop's seeded shuffle gives every run the same batch s."""
    return generate("train", budget.steps * budget.batch_size, seed=budget.data_seed)


def make_model(run: Run, budget: Budget, tokenizer):
    torch.manual_seed(budget.seed)
    if run.upcycle_from:
        start = OUT / run.upcycle_from
        if not (start / "model.safetensors").exists():
            raise SystemExit(f"{start} missing: train its dense run first ({TRAIN_COMMAND} --runs dense-f256)")
        model, _ = load_moe_marian(start, with_tokenizer=False)
        convert_marian_to_moe(model, moe_config(run, budget), upcycle=True, seed=budget.seed)
        return model, budget.steps // 2
    model = build_model(tokenizer, MTSize(d_model=budget.d_model, ffn=run.ffn, vocab_size=len(tokenizer)))
    if run.experts:
        convert_marian_to_moe(model, moe_config(run, budget), upcycle=False, seed=budget.seed)
    return model, 0


def train_run(run: Run, budget: Budget, data: list, tokenizer) -> dict:
    """One run with the training layer's loop (the schedule of `cascade train`, clipping, AdamW)."""
    model, start = make_model(run, budget, tokenizer)
    log, recent = [], []
    t0 = time.time()

    def loss(m, pairs, step: int) -> torch.Tensor:
        batch = seq2seq_batch(tokenizer, [Pair(*p) for p in pairs], 128, m.device)
        logits = m(**batch).logits
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                               ignore_index=-100, label_smoothing=budget.label_smoothing)
        recent.append({"ce": ce.item()})
        if not run.experts:
            return ce
        enc_mask, dec_mask = batch["attention_mask"], batch["labels"] != -100
        stats = layer_stats(m, enc_mask, dec_mask)
        recent[-1]["balance"] = sum(s.balance.item() for s in stats.values()) / len(stats)
        return ce + moe_aux_loss(m, enc_mask, dec_mask)

    def on_step(done: int, total: int, value: float) -> None:
        if done % 25 == 0 or done == total:
            entry = {"step": done, "ce": round(recent[-1]["ce"], 4), "seconds": round(time.time() - t0, 1)}
            if run.experts:
                entry["balance_term"] = round(sum(r["balance"] for r in recent) / len(recent), 4)  # E·Σ f·P, 1 = uniform
            recent.clear()
            log.append(entry)
            print(f"{run.name} " + " ".join(f"{k} {v}" for k, v in entry.items()), flush=True)
        if run.save_half_as and done == total // 2:
            save_moe_marian(model, tokenizer, OUT / run.save_half_as)
            (OUT / run.save_half_as / "train.json").write_text(json.dumps(
                {"run": run.save_half_as, "steps": done, "train_seconds": time.time() - t0,
                 "budget": budget.model_dump()}, indent=2) + "\n")

    loop = LoopConfig(steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr, warmup=budget.warmup,
                      seed=budget.seed, threads=budget.threads, resume=False, log_every=25)
    trainee = Trainee(model, loss, save=lambda m, folder: save_moe_marian(m, tokenizer, folder))
    trained = fit(trainee, data, loop, OUT / run.name, on_step=on_step, first_step=start)
    result = {"run": run.name, "spec": run.model_dump(), "budget": budget.model_dump(), "first_step": start,
              "steps": budget.steps - start, "train_seconds": trained.seconds, "log": log}
    (OUT / run.name / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("run", "steps", "train_seconds")}), flush=True)
    return result


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=Budget().steps)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT), help="runs are written to OUT/<run>")
    parser.add_argument("--skip-existing", action="store_true", help="skip runs whose train.json exists")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    OUT = Path(args.out)
    budget = Budget(steps=args.steps, threads=args.threads)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    data = training_pairs(budget)
    for name in args.runs:
        if args.skip_existing and (OUT / name / "train.json").exists():
            print(f"{name}: exists, skipped", flush=True)
            continue
        train_run(RUNS[name], budget, data, tokenizer)


if __name__ == "__main__":
    main()
