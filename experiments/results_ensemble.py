"""Ensembles on the demo task: do K weak members beat the best of them?

    python -m experiments.results_ensemble [--sentences 300] [--retrain]

Trains (once; reused from build/members) K=5 bagged weak MT members and one
checkpoint series, then scores on the held-out test split: each member, the
linear and log-linear ensembles, a learned router (dense and top-1 sparse),
a checkpoint ensemble, n-best reranking and MBR. Prints a table, then a JSON
line with every BLEU and the gain of the best ensemble over the best member.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import print_json_line, print_table
from flows.metrics import bleu
from demo.demo_grammar import read_tsv

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ROOT / "build" / "members"


def ensure_members(k: int, retrain: bool) -> tuple[list[Path], list[Path]]:
    from experiments.train_members import bagging, checkpoint_dirs, checkpoints

    bag = [MEMBERS / "bag" / f"member-{i}" for i in range(k)]
    if retrain or not all((p / "config.json").exists() for p in bag):
        bagging(k=k, out=str(MEMBERS / "bag"))
    ckpt_member = MEMBERS / "ckpt" / "member-0"
    if retrain or not checkpoint_dirs(ckpt_member):
        checkpoints(out=str(MEMBERS / "ckpt"))
    return bag, checkpoint_dirs(ckpt_member) + [ckpt_member]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    from stages.methods.ensembling import (RouterConfig, ensemble_generate, load_member, mbr_select, pool_nbest, rerank,
                                 routed_generate, train_router)

    torch.set_num_threads(2)
    bag, ckpts = ensure_members(args.k, args.retrain)
    test = read_tsv(ROOT / "assets/demo/corpus/test.tsv")[: args.sentences]
    dev = read_tsv(ROOT / "assets/demo/corpus/dev.tsv")
    src, ref = [e for e, _ in test], [d for _, d in test]
    members = [load_member(p, device="cpu", name=p.name) for p in bag]
    rows, figures = [], {}

    def score(name: str, fn, cost: float):
        start = time.perf_counter()
        hyps = fn()
        seconds = time.perf_counter() - start
        value = round(bleu(hyps, ref), 2)
        rows.append([name, value, cost, seconds])
        figures[name] = value
        return value

    def decode(ms, **kw):
        out = []
        for b in range(0, len(src), 50):
            out += ensemble_generate(ms, src[b:b + 50], num_beams=args.beams, max_new_tokens=60, **kw)
        return out

    nbests = {}
    for i, m in enumerate(members):
        def single(m=m, i=i):
            nb = decode([m], num_return_sequences=args.beams)
            nbests[i] = nb
            return [n[0].text for n in nb]
        score(f"member {i}", single, 1.0)
    best_member = max(figures[f"member {i}"] for i in range(len(members)))
    score("linear ensemble (uniform)", lambda: [n[0].text for n in decode(members)], len(members))
    score("log-linear ensemble (uniform)", lambda: [n[0].text for n in decode(members, combiner="log_linear")],
          len(members))

    router, _ = train_router(members, [e for e, _ in dev], [d for _, d in dev],
                             RouterConfig(features="embeddings", epochs=300))
    routed = lambda k: [n[0].text for b in range(0, len(src), 50)  # noqa: E731
                        for n in routed_generate(members, router, src[b:b + 50], features="embeddings", top_k=k,
                                                 num_beams=args.beams, max_new_tokens=60)]
    score("router ensemble (dense)", lambda: routed(None), len(members))
    score("router top-1 (sparse)", lambda: routed(1), 1.0)

    ck = [load_member(p, device="cpu", name=p.name) for p in ckpts[-3:]]
    score("last checkpoint", lambda: [n[0].text for n in decode(ck[-1:])], 1.0)
    score("checkpoint ensemble (last 3)", lambda: [n[0].text for n in decode(ck)], len(ck))

    pooled = pool_nbest(*[nbests[i] for i in range(len(members))])
    score("n-best rerank (pooled, ensemble score)",
          lambda: [r[0].text for r in rerank(members, src, pooled)], len(members))
    # Both select from the pool the K member decodes made (cost K); the seconds are the selection alone.
    score("MBR (pooled, chrF)", lambda: [mbr_select(c, "chrf").best for c in pooled], len(members))

    ensembles = [k for k in figures if not k.startswith("member") and k != "last checkpoint"]
    best_name = max(ensembles, key=lambda k: figures[k])
    print_table(f"BLEU on {len(src)} held-out test sentences (K={len(members)} bagged weak members)",
                ["system", "BLEU", "decode cost (× one member)", "seconds"], rows)
    print_json_line({**{k.replace(" ", "_"): v for k, v in figures.items()}, "best_member": best_member,
                     "best_ensemble": best_name, "gain_over_best_member": round(figures[best_name] - best_member, 2),
                     "setup": {"k": len(members), "sentences": len(src), "beams": args.beams}})


if __name__ == "__main__":
    main()
