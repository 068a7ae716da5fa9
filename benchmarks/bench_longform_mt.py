"""Long-form speech translation with the demo models: one long file against its clips one by one.

The long demo file (demo/make_demo_long.py) is held-out demo clips joined with pauses. The
speech-translation cascade runs once on the long file (segments -> per-segment MT) and once on the
same clips as separate items. Printed: document BLEU of each against the joined German references,
and the long file's BLEU against the clip-by-clip translations joined (100 = the long-form path
changes nothing). Goal: the long file within 2 BLEU of clip by clip. BLEU is sacrebleu's corpus BLEU
with each file as one document (one line), the method `summary.json` uses.

    python -m benchmarks.bench_longform_mt            # 12 clips, ~35 s of speech
    python -m benchmarks.bench_longform_mt --clips 24
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import print_json_line, print_table
from demo.make_demo_long import TEST, build_demo_long
from flows.metrics import bleu, wer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args(argv)

    from flows.run_job import run
    from pipelines.speech_translation import speech_translation

    clips = {r["id"]: r for r in map(json.loads, (TEST / "manifest.jsonl").read_text(encoding="utf-8").splitlines())}
    with tempfile.TemporaryDirectory(prefix="bench-longform-mt-") as tmp:
        folder = Path(tmp)
        build_demo_long(folder / "long", n_clips=args.clips)
        long_item = json.loads((folder / "long" / "manifest.jsonl").read_text(encoding="utf-8"))
        one_by_one = [dict(clips[c], audio=str(TEST / clips[c]["audio"])) for c in long_item["clips"]]
        pipe = speech_translation(target="de", device="cpu")
        long_row = run(pipe, [str(folder / "long")], out=str(folder / "runs"), job_id="long").outputs[0]
        by_clip = {r["id"]: r for r in run(pipe, one_by_one, out=str(folder / "runs"), job_id="clips").outputs}
    clip_de = " ".join(by_clip[c]["mt"]["text"] for c in long_item["clips"] if c in by_clip)
    clip_en = " ".join(by_clip[c]["asr"]["text"] for c in long_item["clips"] if c in by_clip)
    long_de, ref_de = long_row["mt"]["text"], long_item["ref_de"]
    figures = {
        "clips": len(long_item["clips"]), "segments": len(long_row["mt"]["segments"] or []),
        "split_segments": sum(s["split"] for s in long_row["mt"]["segments"] or []),
        "wer_long": round(wer([long_row["asr"]["text"]], [long_item["ref_en"]]), 2),
        "wer_clips": round(wer([clip_en], [long_item["ref_en"]]), 2),
        "bleu_long": round(bleu([long_de], [ref_de]), 2), "bleu_clips": round(bleu([clip_de], [ref_de]), 2),
        "bleu_long_vs_clips": round(bleu([long_de], [clip_de]), 2),
    }
    figures["longform_bleu_delta"] = round(figures["bleu_long"] - figures["bleu_clips"], 2)
    print_table("long-form speech translation, demo models (document BLEU / WER)",
                ["input", "WER %", "BLEU vs ref_de"],
                [["long file", figures["wer_long"], figures["bleu_long"]],
                 ["clip by clip", figures["wer_clips"], figures["bleu_clips"]]])
    print_json_line(figures)


if __name__ == "__main__":
    main()
