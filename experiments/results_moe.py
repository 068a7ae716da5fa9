"""MoE demo MT vs dense baselines: BLEU, cost, and expert load balance with / without the balance loss.

Reads the runs of experiments.train_moe_mt from build/moe/<run>/ (train first:
`python -m experiments.train_moe_mt`), then on the held-out test split:

- BLEU (sacrebleu) of greedy decoding, the same for every model, batched;
- decode ms per sentence: greedy, one sentence per generate call, mean over the first sentences;
- parameters total and active per token (top-k of E experts; tied embeddings once);
- training wall time and steps from each run's train.json;
- load balance from the routers on the test set, teacher-forced (source + reference), padding
  excluded: per layer the fraction of (token, slot) assignments per expert, its CV and max/mean,
  Switch's E·Σ f·P (1 = uniform), and the share of assignments a Switch capacity limit would drop
  (capacity factor 1.0 and 1.25; the models themselves run dropless).

    python -m experiments.results_moe

Prints rich tables and, as the last stdout line, one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import print_json_line, print_table
from demo.demo_grammar import read_tsv
from stages.training.train_eval import bleu, translate
from stages.methods.moe.gating import drop_over_capacity, expert_capacity
from stages.methods.moe.balance_losses import cv_squared
from stages.methods.moe.moe_marian import layer_stats, load_moe_marian, moe_modules, param_counts

ROOT = Path(__file__).resolve().parents[1]
MOE_DIR = ROOT / "build/moe"
TEST = ROOT / "assets/demo/corpus/test.tsv"
TRAIN_COMMAND = "python -m experiments.train_moe_mt"

MODELS = {  # run -> what it is
    "dense-f256": "dense FFN 256 (upcycling start at S/2, continued densely)",
    "dense-f512": "dense FFN 512 = MoE active params",
    "dense-f1024": "dense FFN 1024 = MoE total params",
    "moe-scratch": "MoE 4x256 top-2, from scratch, balance loss",
    "moe-scratch-nobal": "MoE 4x256 top-2, from scratch, no balance loss",
    "moe-upcycled": "MoE 4x256 top-2, upcycled at S/2, balance loss",
    "moe-upcycled-nobal": "MoE 4x256 top-2, upcycled at S/2, no balance loss",
}
CAPACITY_FACTORS = (1.0, 1.25)


def check_present(names: list[str], moe_dir: Path) -> None:
    missing = [n for n in names if not (moe_dir / n / "model.safetensors").exists()]
    if missing:
        sys.exit(f"missing trained model(s) {', '.join(missing)} in {moe_dir}; train them with:\n"
                 f"  {TRAIN_COMMAND} --runs {' '.join(missing)}")


@torch.no_grad()
def decode_ms(model, tokenizer, sources: list[str]) -> float:
    translate(model, tokenizer, sources[:2], batch_size=1, num_beams=1)  # warm-up
    start = time.perf_counter()
    translate(model, tokenizer, sources, batch_size=1, num_beams=1)
    return 1000 * (time.perf_counter() - start) / len(sources)


@torch.no_grad()
def routing_on_test(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 50) -> dict[str, dict]:
    """Per sparse layer: assignment counts per expert, mean P per expert, and would-be drops per capacity factor."""
    model.eval()
    acc: dict[str, dict] = {}
    for b in range(0, len(pairs), batch_size):
        chunk = pairs[b:b + batch_size]
        enc = tokenizer([s for s, _ in chunk], text_target=[t for _, t in chunk], return_tensors="pt", padding=True)
        dec_mask = enc["labels"] != tokenizer.pad_token_id
        enc["labels"] = enc["labels"].masked_fill(~dec_mask, -100)
        model(**enc)
        for name, s in layer_stats(model, enc["attention_mask"], dec_mask).items():
            E, k, r = s.cfg.n_experts, s.cfg.top_k, s.routing
            a = acc.setdefault(name, {"counts": torch.zeros(E), "prob_sum": torch.zeros(E), "tokens": 0,
                                      "dropped": {cf: 0 for cf in CAPACITY_FACTORS}})
            a["counts"] += torch.bincount(r.routed.reshape(-1), minlength=E)[:E].float()
            a["prob_sum"] += r.probs.sum(0)
            a["tokens"] += r.routed.shape[0]
            for cf in CAPACITY_FACTORS:
                cap = expert_capacity(r.routed.shape[0], k, E, cf)
                kept, _ = drop_over_capacity(r.routed, r.routed_weight, E, cap)
                a["dropped"][cf] += int((kept == E).sum())
    out = {}
    for name, a in acc.items():
        f = a["counts"] / a["counts"].sum()
        p = a["prob_sum"] / a["tokens"]
        E = len(f)
        out[name] = {"fractions": [round(v, 4) for v in f.tolist()],
                     "cv": cv_squared(f).sqrt().item(), "max_over_mean": (f.max() * E).item(),
                     "switch_balance": (E * (f * p).sum()).item(),
                     "dropped": {str(cf): a["dropped"][cf] / a["counts"].sum().item() for cf in CAPACITY_FACTORS}}
    return out


def summarise_balance(per_layer: dict[str, dict]) -> dict:
    vals = list(per_layer.values())
    return {"mean_cv": statistics.mean(v["cv"] for v in vals),
            "worst_max_over_mean": max(v["max_over_mean"] for v in vals),
            "min_expert_fraction": min(min(v["fractions"]) for v in vals),
            "mean_switch_balance": statistics.mean(v["switch_balance"] for v in vals),
            "dropped": {str(cf): statistics.mean(v["dropped"][str(cf)] for v in vals) for cf in CAPACITY_FACTORS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--moe-dir", default=str(MOE_DIR))
    parser.add_argument("--sentences", type=int, default=500, help="test sentences for BLEU and load balance")
    parser.add_argument("--latency-sentences", type=int, default=60, help="sentences timed one by one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-missing", action="store_true", help="leave out untrained models instead of failing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    moe_dir = Path(args.moe_dir)
    if args.skip_missing:
        gone = [n for n in args.models if not (moe_dir / n / "model.safetensors").exists()]
        if gone:
            print(f"skipping untrained {gone} (train: {TRAIN_COMMAND} --runs {' '.join(gone)})", file=sys.stderr)
        args.models = [n for n in args.models if n not in gone]
    check_present(args.models, moe_dir)
    pairs = read_tsv(TEST)[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    t0 = time.time()
    results, balance = {}, {}
    for name in args.models:
        model, tok = load_moe_marian(moe_dir / name)
        train = json.loads((moe_dir / name / "train.json").read_text())
        hyps = translate(model, tok, sources, batch_size=50, num_beams=1)
        params = param_counts(model)
        results[name] = {"what": MODELS[name], "bleu": bleu(hyps, refs), "params_total": params["total"],
                         "params_active": params["active"],
                         "decode_ms": decode_ms(model, tok, sources[: args.latency_sentences]),
                         "train_steps": train["steps"], "train_first_step": train.get("first_step", 0),
                         "train_seconds": train["train_seconds"]}
        if moe_modules(model):
            per_layer = routing_on_test(model, tok, pairs)
            balance[name] = {"balance_loss": train["spec"]["balance"], **summarise_balance(per_layer),
                             "layers": per_layer}
        print(f"{name}: BLEU {results[name]['bleu']:.1f}", file=sys.stderr, flush=True)

    print_table(f"MoE demo MT vs dense baselines (test, {len(pairs)} sentences, greedy; d_model 128, 3+3 layers)",
                ["model", "BLEU", "params total", "params active", "decode ms/sent", "train steps", "train s"],
                [[n, r["bleu"], r["params_total"], r["params_active"], r["decode_ms"],
                  f"{r['train_first_step']}-{r['train_first_step'] + r['train_steps']}", r["train_seconds"]]
                 for n, r in results.items()])
    print_table("Expert load balance, test set (share of assignments per expert; 6 sparse layers, E=4, top-2)",
                ["model", "bal. loss", "mean CV", "worst max/mean", "min share", "E·Σf·P", "drop cf1",
                 "drop cf1.25"],
                [[n, "on" if b["balance_loss"] else "off", b["mean_cv"], b["worst_max_over_mean"],
                  b["min_expert_fraction"], b["mean_switch_balance"], b["dropped"]["1.0"], b["dropped"]["1.25"]]
                 for n, b in balance.items()])
    print_table("Per-layer expert shares (experts 0..3)", ["model", "layer", "shares", "CV", "max/mean"],
                [[n, layer.replace("coder.layers", ""), " ".join(f"{v:.2f}" for v in st["fractions"]), st["cv"],
                  st["max_over_mean"]]
                 for n, b in balance.items() for layer, st in b["layers"].items()])
    # One flat line for the results page: BLEU and decode cost per model, balance per MoE model.
    flat = {"test_sentences": len(pairs), "seconds": round(time.time() - t0, 1)}
    for n, r in results.items():
        flat[f"{n}_bleu"] = round(r["bleu"], 2)
        flat[f"{n}_decode_ms"] = round(r["decode_ms"], 1)
        flat[f"{n}_params_active_M"] = round(r["params_active"] / 1e6, 2)
        flat[f"{n}_params_total_M"] = round(r["params_total"] / 1e6, 2)
    for n, b in balance.items():
        flat[f"{n}_expert_cv"] = round(b["mean_cv"], 3)
        flat[f"{n}_min_expert_share"] = round(b["min_expert_fraction"], 3)
    print_json_line({**flat, "setup": {"latency_sentences": args.latency_sentences, "threads": args.threads}})


if __name__ == "__main__":
    main()
