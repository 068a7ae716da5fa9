"""Speech translation on the held-out demo clips: quality, and batched-through-Prefect vs a per-item loop.

    python -m benchmarks.bench_cascade [--batch-size 64]

(a) per-item loop: one whisper.decode per file, one generate per sentence, same models, no Prefect;
(b) the cascade through the compiled Prefect flow, batched across files.
Prints a table, then {"speedup": a/b, "wer": …, "mt_bleu": …, "cascade_bleu": …}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import print_json_line, print_table, timed
from flows.metrics import bleu, wer

TEST = Path(__file__).resolve().parents[1] / "assets" / "demo" / "test"


def load_models(asr_path, mt_path):
    import whisper
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return (whisper.load_model(asr_path, device="cpu"), AutoTokenizer.from_pretrained(mt_path),
            AutoModelForSeq2SeqLM.from_pretrained(mt_path).eval())


def per_item_loop(items, models, beams):
    """One whisper.decode per file, one generate per sentence (models loaded once, outside the timing)."""
    import torch
    import whisper

    from stages.asr import window_mel
    from stages.runtime.audio_decoding import load_audio, split_windows

    model, tok, mt = models
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    n_frames = 2 * model.dims.n_audio_ctx
    out = []
    with torch.no_grad():
        for it in items:
            pieces = split_windows(load_audio(it["audio"]), n_frames * 160)
            text = " ".join(whisper.decode(model, window_mel(p, 80, n_frames), options).text for p in pieces)
            enc = tok([text], return_tensors="pt")
            seq = mt.generate(**enc, num_beams=beams, max_new_tokens=256)
            out.append((text, tok.decode(seq[0], skip_special_tokens=True).strip()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from flows.run_job import run
    from pipelines.speech_translation import DEMO_ASR, DEMO_MT, speech_translation, translate

    items = [json.loads(line) for line in (TEST / "manifest.jsonl").read_text().splitlines()]
    for it in items:
        it["audio"] = str(TEST / it["audio"])
    beams = 4
    with tempfile.TemporaryDirectory() as tmp:
        text_items = [{"id": it["id"], "text": it["ref_en"], "ref_de": it["ref_de"]} for it in items]
        mt_only = run(translate(), text_items, out=tmp, job_id="mt", batch_size=args.batch_size)
        models = load_models(DEMO_ASR, DEMO_MT)
        run(speech_translation(mt_beams=beams), items[:2], out=tmp, job_id="warmup", batch_size=2)  # loads models
        loops, flows_ = [], []
        for r in range(args.repeats):  # alternate, so background load hits both sides alike
            t, looped = timed(lambda: per_item_loop(items, models, beams))
            loops.append(t)
            t, res = timed(lambda: run(speech_translation(mt_beams=beams, asr_batch=args.batch_size), items, out=tmp,
                                       job_id=f"st{r}",
                                       batch_size=args.batch_size))
            flows_.append(t)
            outputs = res.outputs  # read while the job folder exists (untimed)
    t_loop, t_flow = statistics.median(loops), statistics.median(flows_)
    by_id = {o["id"]: o for o in outputs}
    same = sum(by_id.get(it["id"], {}).get("mt", {}).get("text") == tr for it, (_, tr) in zip(items, looped))
    metrics = res.summary["metrics"]
    figures = {"speedup": round(t_loop / t_flow, 2), "wer": metrics.get("wer"), "mt_bleu": mt_only.summary["metrics"]["bleu"],
               "cascade_bleu": metrics.get("bleu"), "clips": len(items), "same_output_as_loop": f"{same}/{len(items)}",
               "loop_wer": round(wer([a for a, _ in looped], [it["ref_en"] for it in items]), 2),
               "loop_bleu": round(bleu([b for _, b in looped], [it["ref_de"] for it in items]), 2)}
    print_table("Speech translation cascade on the held-out demo clips",
                ["way", "clips", "wall s", "clips / s", "WER %", "BLEU"],
                [["per-item loop (no Prefect)", len(items), t_loop, len(items) / t_loop, figures["loop_wer"],
                  figures["loop_bleu"]],
                 [f"Prefect flow, batches of {args.batch_size}", len(items), t_flow, len(items) / t_flow,
                  figures["wer"], figures["cascade_bleu"]]])
    print_json_line({**figures, "setup": {"batch_size": args.batch_size, "repeats": args.repeats, "beams": beams}})


if __name__ == "__main__":
    main()
