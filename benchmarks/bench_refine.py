"""Iterative refinement costs on CPU.

1. maskpredict_forward_ratio: Mask-Predict decode time (T iterations, ℓ length
   candidates, through the shared loop with traces) / (T × one full CMLM
   forward, encoder + decoder, on the same B×ℓ rows and target width).
   Goal ≤ 1.1. Also shown: / (one encoder pass + T decoder passes), the
   minimum the algorithm must compute (encoder states are reused).
   A random-initialised CMLM of the demo size (d=160, 3+3 layers, demo vocab).
2. selfrefine_compute_saved: fraction of item-steps skipped by per-item early
   stopping vs running every item to the cap. Demo MT generates (beam 4), its
   own mean token log-prob is the critic, re-decoding with sampling refines
   (keep-best), cap 4; the threshold is the median first-draft score, so about
   half the items are done at once. The wall-time saving is measured too.

Runs are interleaved round by round, median over repeats; a table, then a JSON line.

    .venv/bin/python benchmarks/bench_refine.py [--repeats 5] [--threads 1] [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import interleaved_medians
from stages.methods.refinement.cmlm import CMLM, CMLMConfig
from stages.methods.refinement.mask_predict_steps import mask_predict
from stages.self_refine import SelfRefine

ROOT = Path(__file__).resolve().parents[1]
DEMO_MT = ROOT / "assets" / "models" / "mt-en-de"
DEV_TSV = ROOT / "assets" / "demo" / "corpus" / "dev.tsv"


def sources(n: int) -> list[str]:
    if DEV_TSV.exists():
        return [line.split("\t")[0] for line in DEV_TSV.read_text().splitlines()[:n]]
    from stages.testing.tiny_tokenizers import toy_corpus

    return toy_corpus(n)


def mt_model_dir(tmp: str) -> Path:
    """The demo MT model, or (without assets) a random Marian of a similar size."""
    if (DEMO_MT / "config.json").exists():
        return DEMO_MT
    from stages.testing.tiny_checkpoints import MARIAN_MEMBER, save_marian
    from stages.testing.tiny_tokenizers import bpe_tokenizer

    tok = bpe_tokenizer("metaspace", 800)
    return save_marian(Path(tmp) / "mt", tok, d_model=160, layers=3, ffn=640, heads=4, **MARIAN_MEMBER)


def bench_mask_predict(texts: list[str], tok, T: int, beam: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = CMLM(CMLMConfig(vocab_size=len(tok), dropout=0.0, pad_token_id=tok.pad_token_id)).eval()
    states = mask_predict(model, tok, texts, iterations=T, length_beam=beam)
    lengths = torch.cat([s.memory.lengths for s in states])
    # the same shapes the loop runs: every item's ℓ candidates, padded to the widest
    src = tok(texts, return_tensors="pt", padding=True)["input_ids"]
    src_rows = src.repeat_interleave(beam, dim=0)
    width = int(lengths.max())
    tgt = torch.full((len(lengths), width), model.config.pad_token_id)
    tgt[torch.arange(width)[None, :] < lengths[:, None]] = model.config.mask_token_id

    @torch.no_grad()
    def full_forward():
        model(src_rows, tgt)

    @torch.no_grad()
    def encoder_only():
        model.encode(src)

    with torch.no_grad():
        enc, pad = model.encode(src_rows)

    @torch.no_grad()
    def decoder_only():
        model.decode(tgt, enc, pad)

    med = interleaved_medians({
        "mask_predict": lambda: mask_predict(model, tok, texts, iterations=T, length_beam=beam),
        "full_forward": full_forward, "encoder": encoder_only, "decoder": decoder_only}, repeats)
    return {**med, "rows": len(lengths), "width": width,
            "forward_ratio": med["mask_predict"] / (T * med["full_forward"]),
            "overhead_ratio": med["mask_predict"] / (med["encoder"] + T * med["decoder"])}


def bench_self_refine(texts: list[str], model_dir: Path, cap: int, repeats: int) -> dict:
    def stage(threshold: float) -> SelfRefine:
        return SelfRefine(generator={"kind": "seq2seq", "model": str(model_dir), "num_beams": 4},
                          critic={"kind": "seq2seq_score", "threshold": threshold},
                          refiner={"kind": "redecode", "seed": 1}, keep_best=True, max_iterations=cap)

    items = [SelfRefine.Input(text=t) for t in texts]
    first_scores = [o.trace[0].score for o in SelfRefine(
        generator={"kind": "seq2seq", "model": str(model_dir), "num_beams": 4},
        critic={"kind": "seq2seq_score"}, max_iterations=1).process(items)]
    threshold = statistics.median(first_scores)
    early, to_cap = stage(threshold), stage(float("inf"))
    med = interleaved_medians({"early_stop": lambda: early.process(items),
                               "to_cap": lambda: to_cap.process(items)}, repeats)
    outs = early.process(items)
    steps = sum(o.iterations for o in outs)
    stopped = {k: sum(o.iterations == k + 1 for o in outs) / len(outs) for k in range(cap)}
    return {**med, "threshold": threshold, "item_steps": steps, "item_steps_cap": len(items) * cap,
            "compute_saved": 1 - steps / (len(items) * cap), "time_saved": 1 - med["early_stop"] / med["to_cap"],
            "stopped_at": stopped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10, help="Mask-Predict T")
    ap.add_argument("--length-beam", type=int, default=3)
    ap.add_argument("--cap", type=int, default=4, help="self-refine max_iterations")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = sources(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoTokenizer

        model_dir = mt_model_dir(tmp)
        tok = AutoTokenizer.from_pretrained(model_dir)
        mp = bench_mask_predict(texts, tok, args.iterations, args.length_beam, args.repeats)
        sr = bench_self_refine(texts, model_dir, args.cap, args.repeats)

    print(f"Mask-Predict: random CMLM d=160 3+3 layers vocab={len(tok)} | items={len(texts)} ℓ={args.length_beam} "
          f"-> {mp['rows']} rows, target width {mp['width']} | T={args.iterations} | threads={args.threads} "
          f"repeats={args.repeats} (median)")
    print(f"{'':<34}{'seconds':>10}")
    for name in ("mask_predict", "full_forward", "encoder", "decoder"):
        print(f"{name:<34}{mp[name]:>10.4f}")
    print(f"{'maskpredict_forward_ratio':<34}{mp['forward_ratio']:>10.3f}   goal <= 1.1  (/ T x full forward)")
    print(f"{'  vs encoder + T x decoder':<34}{mp['overhead_ratio']:>10.3f}   (loop overhead over the minimum)")
    print()
    print(f"Self-refine: {model_dir.name} beam 4 -> seq2seq_score critic (threshold {sr['threshold']:.3f} = median "
          f"first score) -> redecode, keep-best, cap {args.cap}")
    print(f"{'':<34}{'value':>10}")
    print(f"{'item-steps run / at cap':<34}{sr['item_steps']:>6} / {sr['item_steps_cap']}")
    for k, frac in sr["stopped_at"].items():
        print(f"{'  stopped after iteration ' + str(k):<34}{frac:>10.2f}")
    print(f"{'seconds, early stopping':<34}{sr['early_stop']:>10.3f}")
    print(f"{'seconds, every item to the cap':<34}{sr['to_cap']:>10.3f}")
    print(f"{'selfrefine_compute_saved':<34}{sr['compute_saved']:>10.3f}   (item-steps skipped)")
    print(f"{'selfrefine_time_saved':<34}{sr['time_saved']:>10.3f}   (wall time)")
    print(json.dumps({"maskpredict_forward_ratio": round(mp["forward_ratio"], 4),
                      "maskpredict_overhead_ratio": round(mp["overhead_ratio"], 4),
                      "selfrefine_compute_saved": round(sr["compute_saved"], 4),
                      "selfrefine_time_saved": round(sr["time_saved"], 4),
                      "setup": {"batch": len(texts), "length_beam": args.length_beam, "iterations": args.iterations,
                                "threads": args.threads, "cap": args.cap, "repeats": args.repeats}}))


if __name__ == "__main__":
    main()
