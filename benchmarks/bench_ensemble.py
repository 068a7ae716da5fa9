"""Ensemble decoding cost on CPU with tiny-but-not-trivial random Marian models.

1. ensemble_cost_ratio: time of one K=3 ensemble beam decode / sum of the 3
   members each decoding alone with the same loop (goal <= 1.15).
2. cache_speedup: uncached (full-prefix recomputation every step) / cached
   ensemble decode time, output length forced to >= 30 tokens (goal >= 3).

Lengths are forced (min_new_tokens = max_new_tokens) so every run does the
same work. Runs are interleaved round by round (the CPU is shared, load
drifts); median over repeats; a table, then a final JSON line.

    .venv/bin/python benchmarks/bench_ensemble.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import interleaved_medians
from stages.methods.ensembling import ensemble_generate, load_member
from stages.testing.tiny_checkpoints import MARIAN_MEMBER, save_marian
from stages.testing.tiny_tokenizers import bpe_tokenizer, pseudo_word_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU is shared)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--length", type=int, default=32, help="forced output length (>= 30)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpus = pseudo_word_corpus()
    sources = corpus[: args.batch]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = bpe_tokenizer("metaspace", args.vocab, corpus=corpus)
        members = [load_member(save_marian(Path(tmp) / f"m{i}", tokenizer, seed=i, d_model=args.d_model,
                                           layers=args.layers, ffn=4 * args.d_model, heads=4, **MARIAN_MEMBER),
                               device="cpu")
                   for i in range(3)]
    decode = dict(num_beams=args.beams, max_new_tokens=args.length, min_new_tokens=args.length,
                  forced_eos_token_id=None)

    def run(group, **extra):
        return lambda: ensemble_generate(group, sources, **decode, **extra)

    runs = {f"member {i} alone": run([m]) for i, m in enumerate(members)}
    runs["K=3 ensemble, cached"] = run(members)
    runs["K=3 ensemble, uncached"] = run(members, use_cache=False)
    medians = interleaved_medians(runs, args.repeats)
    singles = [medians[f"member {i} alone"] for i in range(3)]
    ensemble, uncached = medians["K=3 ensemble, cached"], medians["K=3 ensemble, uncached"]
    out_len = len(ensemble_generate(members, sources[:1], **decode)[0][0].token_ids)

    ratio = ensemble / sum(singles)
    speedup = uncached / ensemble
    rows = [("member 0 alone", singles[0]), ("member 1 alone", singles[1]), ("member 2 alone", singles[2]),
            ("sum of singles", sum(singles)), ("K=3 ensemble, cached", ensemble),
            ("K=3 ensemble, uncached", uncached)]
    print(f"Marian d={args.d_model} layers={args.layers} vocab={len(tokenizer)} | batch={args.batch} "
          f"beams={args.beams} output_len={out_len} | threads={args.threads} repeats={args.repeats} (median)")
    print(f"{'decode':<26}{'seconds':>10}")
    for name, seconds in rows:
        print(f"{name:<26}{seconds:>10.3f}")
    print(f"{'ensemble_cost_ratio':<26}{ratio:>10.3f}   goal <= 1.15")
    print(f"{'cache_speedup':<26}{speedup:>10.2f}   goal >= 3")
    setup = {"members": len(members), "d_model": args.d_model, "layers": args.layers, "vocab": len(tokenizer),
             "batch": args.batch, "beams": args.beams, "length": out_len, "threads": args.threads,
             "repeats": args.repeats}
    print(json.dumps({"ensemble_cost_ratio": round(ratio, 4), "cache_speedup": round(speedup, 3), "setup": setup}))


if __name__ == "__main__":
    main()
