"""Iterative refinement on the demo task (issue #7): does a second look improve the output?

    .venv/bin/python -m experiments.results_refine [--sentences 300] [--threads 2]

Needs three trained models (none is trained here; a missing one stops the
script with the command that makes it):

    build/deliberation   experiments/train_deliberation.py: first-pass/ (the deliberately weak
                         EN->DE drafter) and second-pass/ (reads "source </s> draft")
    build/cmlm           experiments/train_cmlm.py cmlm: the conditional masked LM for Mask-Predict
    build/mlm-en         experiments/train_cmlm.py mlm: the English masked LM for ASR repair

and the demo assets (MT, test split, test clips) plus a weak ASR snapshot.

Figures, all on the held-out test split:

1. deliberation  BLEU of the weak model's greedy drafts (what the training flow drafted with)
                 vs the second pass over them; also the second pass alone (empty draft) and
                 over the demo MT's drafts
2. mask-predict  BLEU and ms/item for T = 1, 2, 4, 10 vs the autoregressive demo MT
3. self-refine   weak-model drafts, the demo MT's mean token log-prob as critic (threshold
                 calibrated on dev references), refined by re-sampling the weak model
                 (keep-best) or by the demo MT; BLEU per iteration, share stopped per iteration
4. asr repair    WER of a weak ASR snapshot's transcripts of the test clips, before and after
                 masked-diffusion repair with the English MLM

Prints tables, then (last line) one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import print_json_line, print_table
from flows.metrics import bleu, normalize_text, wer
from demo.demo_grammar import read_tsv

ROOT = Path(__file__).resolve().parents[1]
TEST_TSV = ROOT / "assets" / "demo" / "corpus" / "test.tsv"
DEV_TSV = ROOT / "assets" / "demo" / "corpus" / "dev.tsv"
LOCK = "python -m"
TRAIN_HINT = {
    "deliberation": f"{LOCK} experiments.train_deliberation --out build/deliberation --pairs 16000 --weak-steps 600 "
                    "--steps 700 --max-minutes 6",
    "cmlm": f"{LOCK} experiments.train_cmlm cmlm --out build/cmlm --max-steps 1500 --max-minutes 9",
    "mlm": f"{LOCK} experiments.train_cmlm mlm --out build/mlm-en --max-steps 6000 --max-minutes 4",
    "asr": ".venv/bin/python -m demo.train_demo_asr (a weak, early snapshot: see --asr)",
}


class MissingModel(SystemExit):
    pass


def require(path: Path, marker: str, what: str) -> Path:
    if not (path / marker).is_file():
        raise MissingModel(f"results_refine: {what} model not found at {path} (no {marker}).\n"
                           f"Train it first (from the repo root):\n    {TRAIN_HINT[what]}\n"
                           f"or point the script at another copy (see --help).")
    return path


def ms_per_item(seconds: float, n: int) -> float:
    return round(1000 * seconds / max(n, 1), 2)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# -- 1. deliberation ---------------------------------------------------------------


def run_deliberation(args, src: list[str], ref: list[str], mt_drafts: list[str]) -> tuple[list, dict, list[str]]:
    from stages.deliberate import Deliberate
    from stages.methods.refinement.second_pass import fit_draft
    from stages.methods.refinement.seq2seq_part import Seq2Seq, Seq2SeqOptions
    from stages.runtime.hf_loading import load_hf

    first_dir, second_dir = args.deliberation / "first-pass", args.deliberation / "second-pass"
    weak = Seq2Seq(*load_hf("AutoModelForSeq2SeqLM", str(first_dir), "cpu", "float32"),
                   Seq2SeqOptions(num_beams=1, batch_size=64))
    t_first, drafts = timed(lambda: weak.decode(src))  # greedy, as experiments/train_deliberation.py drafts
    second_model, second_tok = load_hf("AutoModelForSeq2SeqLM", str(second_dir), "cpu", "float32")
    # a rambling draft is cut to the second pass's positions, as experiments/train_deliberation.py does in training
    limit = second_model.config.max_position_embeddings

    def run(draft_list: list[str], passes: int = 1):
        stage = Deliberate(model=str(second_dir), num_beams=4, batch_size=64, device="cpu", passes=passes)
        return stage.process([Deliberate.Input(source_text=s, text=fit_draft(second_tok, s, d, "</s>", limit))
                              for s, d in zip(src, draft_list)])

    run(drafts[:4])  # load + warm up
    t_second, refined = timed(lambda: run(drafts))
    refined2 = run(drafts, passes=2)
    empty = run([""] * len(src))
    over_mt = run(mt_drafts)
    texts = [o.text for o in refined]
    b_first, b_second = bleu(drafts, ref), bleu(texts, ref)
    changed = sum(o.text != d for o, d in zip(refined, drafts)) / len(src)
    exact_first = sum(d == r for d, r in zip(drafts, ref)) / len(src)
    exact_second = sum(t == r for t, r in zip(texts, ref)) / len(src)
    figures = {
        "bleu_first_pass_weak": round(b_first, 2),
        "bleu_deliberation": round(b_second, 2),
        "bleu_deliberation_gain": round(b_second - b_first, 2),
        "bleu_deliberation_2_passes": round(bleu([o.text for o in refined2], ref), 2),
        "bleu_second_pass_empty_draft": round(bleu([o.text for o in empty], ref), 2),
        "bleu_demo_mt": round(bleu(mt_drafts, ref), 2),
        "bleu_deliberation_over_demo_mt": round(bleu([o.text for o in over_mt], ref), 2),
        "exact_match_first_pass": round(exact_first, 3),
        "exact_match_deliberation": round(exact_second, 3),
        "share_changed": round(changed, 3),
        "ms_per_item_first_pass": ms_per_item(t_first, len(src)),
        "ms_per_item_second_pass": ms_per_item(t_second, len(src)),
    }
    rows = [
        ["first pass (weak, greedy)", figures["bleu_first_pass_weak"], f"{exact_first:.1%}",
         figures["ms_per_item_first_pass"]],
        ["deliberation over weak drafts", figures["bleu_deliberation"], f"{exact_second:.1%}",
         figures["ms_per_item_second_pass"]],
        ["  2 passes", figures["bleu_deliberation_2_passes"], "", ""],
        ["  second pass, empty draft", figures["bleu_second_pass_empty_draft"], "", ""],
        ["demo MT (beam 4)", figures["bleu_demo_mt"], "", ""],
        ["  over demo MT drafts", figures["bleu_deliberation_over_demo_mt"], "", ""],
    ]
    return rows, figures, drafts


# -- 2. Mask-Predict ----------------------------------------------------------------


def run_mask_predict(args, src: list[str], ref: list[str], mt) -> tuple[list, dict]:
    from stages.mask_predict import MaskPredict

    items = [MaskPredict.Input(text=s) for s in src]
    rows, figures = [], {}
    t_ar, ar = timed(lambda: mt.decode(src))
    t_greedy, greedy = timed(lambda: mt.decode(src, num_beams=1))
    figures["ar_bleu_beam4"], figures["ar_ms_per_item_beam4"] = round(bleu(ar, ref), 2), ms_per_item(t_ar, len(src))
    figures["ar_bleu_greedy"] = round(bleu(greedy, ref), 2)
    figures["ar_ms_per_item_greedy"] = ms_per_item(t_greedy, len(src))
    def exact(hyps: list[str]) -> str:
        return f"{sum(h.strip() == r.strip() for h, r in zip(hyps, ref)) / len(ref):.1%}"

    rows.append(["AR demo MT, beam 4", figures["ar_bleu_beam4"], exact(ar), "", figures["ar_ms_per_item_beam4"]])
    rows.append(["AR demo MT, greedy", figures["ar_bleu_greedy"], exact(greedy), "",
                 figures["ar_ms_per_item_greedy"]])
    MaskPredict(model=str(args.cmlm), iterations=1, device="cpu").process(items[:8])  # load + warm up
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.cmlm)
    ref_lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in ref]
    for T in (1, 2, 4, 10):
        stage = MaskPredict(model=str(args.cmlm), iterations=T, length_beam=args.length_beam, device="cpu")
        seconds, out = timed(lambda: stage.process(items))
        hyps = [o.text for o in out]
        figures[f"maskpredict_bleu_T{T}"] = round(bleu(hyps, ref), 2)
        figures[f"maskpredict_ms_per_item_T{T}"] = ms_per_item(seconds, len(src))
        length_ok = sum(o.trace[-1].info.get("length") == n for o, n in zip(out, ref_lengths)) / len(out)
        figures[f"maskpredict_length_right_T{T}"] = round(length_ok, 3)
        rows.append([f"Mask-Predict T={T}", figures[f"maskpredict_bleu_T{T}"], exact(hyps), f"{length_ok:.1%}",
                     figures[f"maskpredict_ms_per_item_T{T}"]])
    dev = args.cmlm / "eval.json"
    if dev.exists():  # the training flow's own Mask-Predict scores on 200 dev sentences
        import json

        scores = json.loads(dev.read_text())
        figures.update({f"maskpredict_dev_bleu_T{T}": scores[f"dev_bleu_T{T}"] for T in (1, 2, 4, 10)
                        if f"dev_bleu_T{T}" in scores})
    return rows, figures


# -- 3. self-refine -----------------------------------------------------------------


def calibrate_threshold(mt_dir: str, quantile: float, n: int) -> float:
    """The demo MT's mean token log-prob of dev *references*: a draft scoring like most correct ones is done."""
    from stages.runtime.hf_loading import load_hf
    from stages.methods.refinement.seq2seq_part import Seq2Seq, Seq2SeqOptions

    dev = read_tsv(DEV_TSV)[:n]
    scorer = Seq2Seq(*load_hf("AutoModelForSeq2SeqLM", mt_dir, "cpu", "float32"), Seq2SeqOptions(batch_size=64))
    scores = sorted(scorer.score([e for e, _ in dev], [d for _, d in dev]))
    return scores[int(quantile * (len(scores) - 1))]


def run_self_refine(args, src: list[str], ref: list[str]) -> tuple[list, list, dict]:
    from stages.methods.refinement.refine_report import compute_saved, outputs_by_iteration, stopped_at
    from stages.self_refine import SelfRefine

    weak, mt = str(args.deliberation / "first-pass"), str(args.mt)
    threshold = calibrate_threshold(mt, args.critic_quantile, 200)
    generator = {"kind": "seq2seq", "model": weak, "num_beams": 1, "batch_size": 64}
    critic = {"kind": "seq2seq_score", "model": mt, "threshold": threshold, "batch_size": 64}
    setups = {
        "resample": {"refiner": {"kind": "redecode", "model": weak, "do_sample": True, "temperature": 0.8,
                                 "seed": 1, "batch_size": 64}},
        "demo_mt": {"refiner": {"kind": "redecode", "model": mt, "do_sample": False, "num_beams": 4,
                                "batch_size": 64}},
    }
    items = [SelfRefine.Input(text=s) for s in src]
    cap, rows, stop_rows, figures = args.cap, [], [], {"selfrefine_critic_threshold": round(threshold, 4)}
    for name, parts in setups.items():
        stage = SelfRefine(generator=generator, critic=critic, keep_best=True, max_iterations=cap, device="cpu",
                           **parts)
        stage.process(items[:4])  # load + warm up
        seconds, out = timed(lambda: stage.process(items))
        traces = [o.trace for o in out]
        per_iter = [round(bleu(hyps, ref), 2) for hyps in outputs_by_iteration(traces, cap)]
        stops = stopped_at(traces)
        fractions = [round(stops.get(k, 0.0), 3) for k in range(cap)]
        figures[f"selfrefine_{name}_bleu_per_iteration"] = per_iter
        figures[f"selfrefine_{name}_stopped_at_iteration"] = fractions
        figures[f"selfrefine_{name}_compute_saved"] = round(compute_saved(traces, cap), 3)
        figures[f"selfrefine_{name}_ms_per_item"] = ms_per_item(seconds, len(src))
        label = {"resample": "weak resamples", "demo_mt": "demo MT"}
        rows.append([label[name], *per_iter, figures[f"selfrefine_{name}_ms_per_item"]])
        stop_rows.append([label[name], *fractions, figures[f"selfrefine_{name}_compute_saved"]])
    return rows, stop_rows, figures


# -- 4. ASR repair ------------------------------------------------------------------


def transcribe_test_clips(asr_path: Path) -> tuple[list[str], list[str]]:
    import whisper

    from demo.eval_demo import load_test_set, transcribe

    clips = load_test_set()
    model = whisper.load_model(str(asr_path), device="cpu")
    return transcribe(model, [c["waveform"] for c in clips]), [c["ref_en"] for c in clips]


def run_asr_repair(args) -> tuple[list, dict]:
    from stages.masked_diffusion import MaskedDiffusionRepair

    hyps, refs = transcribe_test_clips(args.asr)
    per_item = [wer([h], [r]) for h, r in zip(hyps, refs)]
    wrong = [i for i, w in enumerate(per_item) if w > 0]
    figures = {"asr_model": str(args.asr), "asr_clips": len(hyps), "asr_clips_with_errors": len(wrong),
               "asr_wer_before": round(wer(hyps, refs), 2),
               "asr_wer_before_on_clips_with_errors": round(wer([hyps[i] for i in wrong], [refs[i] for i in wrong]), 2)}
    rows = [["ASR as is", "", figures["asr_wer_before"],
             figures["asr_wer_before_on_clips_with_errors"], "", ""]]
    settings = {"threshold": {"steps": 4, "remask_fraction": 0.15, "confidence_threshold": args.repair_threshold},
                "default": {"steps": 4, "remask_fraction": 0.15}}
    for name, cfg in settings.items():
        stage = MaskedDiffusionRepair(model=str(args.mlm), device="cpu", dtype="float32", **cfg)
        out = stage.process([MaskedDiffusionRepair.Input(text=h, language="en") for h in hyps])
        fixed = [o.text for o in out]
        after = [wer([f], [r]) for f, r in zip(fixed, refs)]
        changed = sum(normalize_text(f) != normalize_text(h) for f, h in zip(fixed, hyps))
        better = sum(a < b for a, b in zip(after, per_item))
        worse = sum(a > b for a, b in zip(after, per_item))
        figures[f"asr_repair_{name}_wer_after"] = round(wer(fixed, refs), 2)
        figures[f"asr_repair_{name}_wer_after_on_clips_with_errors"] = round(
            wer([fixed[i] for i in wrong], [refs[i] for i in wrong]), 2)
        figures[f"asr_repair_{name}_clips_improved"] = better
        figures[f"asr_repair_{name}_clips_worsened"] = worse
        label = (f"repair p<{args.repair_threshold}" if name == "threshold" else "repair, default")
        rows.append([label, changed, figures[f"asr_repair_{name}_wer_after"],
                     figures[f"asr_repair_{name}_wer_after_on_clips_with_errors"], better, worse])
    figures["asr_examples"] = [{"ref": refs[i], "asr": hyps[i]} for i in wrong[:3]]
    return rows, figures


# -- main ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deliberation", type=Path, default=ROOT / "build" / "deliberation",
                    help="experiments/train_deliberation.py output (first-pass/ and second-pass/)")
    ap.add_argument("--cmlm", type=Path, default=ROOT / "build" / "cmlm")
    ap.add_argument("--mlm", type=Path, default=ROOT / "build" / "mlm-en")
    ap.add_argument("--mt", type=Path, default=ROOT / "assets" / "models" / "mt-en-de")
    ap.add_argument("--asr", type=Path, default=ROOT / "build" / "asr_stage1_model.pt",
                    help="a weak (early) ASR snapshot in openai-whisper format, so transcripts have errors")
    ap.add_argument("--sentences", type=int, default=300, help="test sentences (of 500)")
    ap.add_argument("--length-beam", type=int, default=3)
    ap.add_argument("--cap", type=int, default=4, help="self-refine max iterations")
    ap.add_argument("--critic-quantile", type=float, default=0.1,
                    help="self-refine: done when the demo MT scores a draft at least as high as this quantile "
                         "of its scores of dev references")
    ap.add_argument("--repair-threshold", type=float, default=0.1, help="masked diffusion: re-mask only p < this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["deliberation", "maskpredict", "selfrefine", "asr"])
    args = ap.parse_args()
    require(args.deliberation / "first-pass", "config.json", "deliberation")
    require(args.deliberation / "second-pass", "config.json", "deliberation")
    require(args.cmlm, "cmlm_config.json", "cmlm")
    require(args.mlm, "config.json", "mlm")
    if not args.asr.exists():
        raise MissingModel(f"results_refine: no ASR snapshot at {args.asr}; pass --asr with a weak whisper-format "
                           f"checkpoint (assets/models/asr-tiny/model.pt works but has almost no errors to repair)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from stages.runtime.hf_loading import load_hf
    from stages.methods.refinement.seq2seq_part import Seq2Seq, Seq2SeqOptions

    test = read_tsv(TEST_TSV)[: args.sentences]
    src, ref = [e for e, _ in test], [d for _, d in test]
    mt = Seq2Seq(*load_hf("AutoModelForSeq2SeqLM", str(args.mt), "cpu", "float32"),
                 Seq2SeqOptions(num_beams=4, batch_size=64))
    mt.decode(src[:8])  # warm-up
    figures: dict = {"sentences": len(src), "threads": args.threads}
    t0 = time.perf_counter()
    notes: list[str] = []

    mp_rows, mp = ([], {}) if "maskpredict" in args.skip else run_mask_predict(args, src, ref, mt)
    figures.update(mp)
    if mp_rows:
        gap = mp["maskpredict_bleu_T10"] - mp["ar_bleu_beam4"]
        notes.append(f"mask-predict: BLEU T=1→10 {mp['maskpredict_bleu_T1']:.1f}→{mp['maskpredict_bleu_T10']:.1f}, "
                     f"{gap:+.1f} vs the AR demo MT (beam 4)"
                     + (f" (dev, from training: {mp['maskpredict_dev_bleu_T1']:.1f}→"
                        f"{mp['maskpredict_dev_bleu_T10']:.1f})" if "maskpredict_dev_bleu_T10" in mp else "")
                     + f"; a wrong predicted length caps an item whatever T; ms/item are whole-batch wall time on "
                     f"{args.threads} CPU threads, the CMLM has the demo MT's size")
        print_table(f"Mask-Predict vs autoregressive, {len(src)} test sentences, {args.threads} threads",
                    ["decoder", "BLEU", "exact match", "length right", "ms / item"], mp_rows)
    if "deliberation" not in args.skip:
        mt_drafts = mt.decode(src)
        d_rows, d, _ = run_deliberation(args, src, ref, mt_drafts)
        figures.update(d)
        print_table(f"Deliberation, {len(src)} test sentences", ["system", "BLEU", "exact match", "ms / item"],
                    d_rows)
        alone = d["bleu_deliberation"] - d["bleu_second_pass_empty_draft"]
        notes.append(f"deliberation: {d['bleu_deliberation_gain']:+.2f} BLEU over the weak drafts; the draft itself "
                     f"is worth {alone:+.2f} BLEU over the same second pass given an empty draft"
                     + (" (so the gain comes from the second-pass model, not from reading the draft)"
                        if alone <= 0 else ""))
    if "selfrefine" not in args.skip:
        s_rows, stop_rows, s = run_self_refine(args, src, ref)
        figures.update(s)
        its = [f"BLEU it {k}" for k in range(args.cap)]
        print_table(f"Self-refine: weak drafts, demo-MT log-prob critic (done at ≥ "
                    f"{s['selfrefine_critic_threshold']:.3f} = dev-reference q{args.critic_quantile:g}), "
                    f"cap {args.cap}",
                    ["refiner", *its, "ms / item"], s_rows)
        r = s["selfrefine_resample_bleu_per_iteration"]
        notes.append(f"self-refine: re-sampling the weak model under the demo-MT critic moves BLEU "
                     f"{r[0]:.1f}→{r[-1]:.1f}; with the demo MT (≈100 BLEU) as refiner the loop is an upper "
                     f"bound that shows the stop fractions / compute saved, not a gain of self-refinement")
        print_table("Self-refine: share of items whose last iteration was k",
                    ["refiner", *[f"stopped at {k}" for k in range(args.cap)], "compute saved"], stop_rows)
    if "asr" not in args.skip:
        a_rows, a = run_asr_repair(args)
        figures.update({k: v for k, v in a.items() if k != "asr_examples"})
        print_table(f"Masked-diffusion repair of {args.asr.name} transcripts ({a['asr_clips']} test clips, "
                    f"{a['asr_clips_with_errors']} with errors), MLM {args.mlm.name}",
                    ["transcripts", "changed", "WER %", "WER % on wrong clips", "better", "worse"], a_rows)
        notes.append(f"asr repair: {a['asr_clips_with_errors']}/{a['asr_clips']} transcripts of {args.asr.name} have "
                     f"errors; repair (p<{args.repair_threshold}) WER {a['asr_wer_before']:.2f}→"
                     f"{a['asr_repair_threshold_wer_after']:.2f}, {a['asr_repair_threshold_clips_improved']} clips "
                     f"better / {a['asr_repair_threshold_clips_worsened']} worse"
                     + ("; the MLM sees only the text, so a fluent wrong word (same part of speech) looks as "
                        "likely to it as the right one" if a["asr_repair_threshold_wer_after"] >= a["asr_wer_before"]
                        else ""))
        for ex in a["asr_examples"]:
            print(f"  e.g. ref: {ex['ref']!r}  asr: {ex['asr']!r}")
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    for n in notes:
        print("note:", n)
    print_json_line({**figures, "setup": {"length_beam": args.length_beam, "cap": args.cap,
                                          "critic_quantile": args.critic_quantile,
                                          "repair_threshold": args.repair_threshold}})


if __name__ == "__main__":
    main()
