"""Regenerate docs/RESULTS.md from the benchmarks and result flows.

    python -m scripts.make_results            # run every section, then write the page
    python -m scripts.make_results --only overhead cascade
    python -m scripts.make_results --render   # rewrite the page from stored figures only

Each section runs one command whose last stdout line is a JSON object; that
object is stored in docs/results/NAME.json (with the command and the date) and
rendered into the page, so every figure on the page names the command behind it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "RESULTS.md"


@dataclass
class Section:
    name: str
    title: str
    command: list[str]
    how: str  # how the figures were obtained, for the reader
    goals: dict[str, str]  # figure -> goal text, e.g. {"overhead_ratio": "≤ 1.05"}


PY = [sys.executable, "-m"]
SECTIONS = [
    Section("overhead", "Prefect overhead (issue: spine)", PY + ["benchmarks.bench_overhead"],
            "The same two-stage tensor pipeline (1024 items, micro-batches of 32) timed as a plain Python loop "
            "over the stages and as the compiled Prefect flow on a warm temporary server, alternating three times; "
            "medians. The flow also writes every batch to the run store; the loop does not. The Prefect server "
            "runs on the same two cores: server_cpu_s_per_flow is the CPU time it used during one timed flow "
            "(about 35 ms per task run, recording task-run events), which the stages then lack.",
            {"overhead_ratio": "≤ 1.05"}),
    Section("cascade", "Speech translation cascade (issue: speech translation)", PY + ["benchmarks.bench_cascade"],
            "Held-out synthetic test clips (assets/demo/test); the demo ASR and MT models; WER after lowercasing "
            "and stripping punctuation (jiwer), BLEU with sacrebleu defaults. Speed: the cascade through the "
            "Prefect flow in micro-batches of 64 (whisper windows decoded together, MT beam 4 batched) vs one "
            "whisper.decode per file plus one generate per sentence, same models loaded once before timing on "
            "both sides, no Prefect; medians of three alternating runs; speedup = loop / flow.",
            {"speedup": "≥ 4", "wer": "≤ 5", "mt_bleu": "≥ 70", "cascade_bleu": "≥ 60"}),
    Section("ensemble_speed", "Ensemble decoding cost (issue: ensembles)", PY + ["benchmarks.bench_ensemble"],
            "Random Marian members (d=256, 3 layers, vocab 4000), batch 8, 4 beams, 32 forced output tokens, one "
            "thread; K=3 ensemble time over the sum of the three single decodes with the same loop, and the cached "
            "loop over a loop that recomputes the whole prefix each step; medians of interleaved rounds.",
            {"ensemble_cost_ratio": "≤ 1.15", "cache_speedup": "≥ 3"}),
    Section("ensemble_quality", "Ensembles on the demo task (issue: ensembles)", PY + ["benchmarks.results_ensemble"],
            "Five weak members (d=96, 2 layers) each trained on a bootstrap resample of 6000 grammar pairs by the "
            "bagging flow (scripts/train_members.py), one checkpoint series; BLEU (sacrebleu) on the first 300 "
            "held-out test sentences, beam 4. Router: an MLP over mean input embeddings trained on the dev split "
            "to minimise the linear ensemble's NLL; top-1 runs one member per sentence.",
            {"gain_over_best_member": "≥ 2 BLEU"}),
    Section("merge_speed", "Merging speed and memory vs mergekit (issue: merging)", PY + ["benchmarks.bench_merge"],
            "TIES over three random 134M-parameter Llama-style fine-tunes plus a base (bf16, sharded safetensors), "
            "ours and mergekit-yaml 0.1.5 (its own venv, scripts/mergekit_venv.sh) as child processes; wall time "
            "and peak RSS of each.",
            {"time_ratio": "≤ 0.5", "rss_ratio": "≤ 1"}),
    Section("moe_speed", "Sparse MoE layer speed (issue: mixture of experts)", PY + ["benchmarks.bench_moe"],
            "Our layer vs transformers' MixtralSparseMoeBlock (eager) with identical weights, d=512, ffn=1024, "
            "E=8, k=2, fp32 on the CPU, and vs a dense SwiGLU FFN with the same active FLOPs at T=4096; medians "
            "after warm-up. Ratios are ours / theirs (below 1 = faster).",
            {"hf_ratio_T8": "≤ 0.5", "hf_ratio_T64": "≤ 0.5", "dense_ratio_T4096": "≤ 1.15"}),
    Section("refine_speed", "Refinement cost (issue: iterative refinement)", PY + ["benchmarks.bench_refine"],
            "Mask-Predict on a random conditional masked LM of demo size (32 items × 3 length candidates, T=10, "
            "one thread): its time over T full forward passes. Self-refine on the demo MT with a score threshold "
            "at the median first-draft score and a cap of 4: the fraction of item-steps that per-item stopping "
            "skips compared with running every item to the cap.",
            {"maskpredict_forward_ratio": "≤ 1.1", "selfrefine_compute_saved": "> 0"}),
    Section("load", "A 10 000-item job (issue: beyond one machine)", PY + ["benchmarks.bench_load"],
            "10 000 items in 50 micro-batches of 200 through a small tensor stage, as a bare loop and as the "
            "Prefect flow (2 workers, one torch thread), alternating; medians; RSS growth of the flow process.",
            {"load_overhead_ratio": "≤ 1.05"}),
]


def run_section(section: Section) -> dict:
    print(f"== {section.name}: {' '.join(section.command[1:])}", flush=True)
    start = time.time()
    proc = subprocess.run(section.command, cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write(proc.stdout[-4000:])
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{section.name} failed (exit {proc.returncode})")
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    figures = json.loads(lines[-1])
    record = {"figures": figures, "command": "python -m " + " ".join(section.command[2:]),
              "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - start, 1),
              "table": _table_lines(proc.stdout)}
    STORE.mkdir(parents=True, exist_ok=True)
    (STORE / f"{section.name}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return record


def _table_lines(stdout: str) -> list[str]:
    """The human table each benchmark prints (everything before the JSON line)."""
    lines = stdout.rstrip().splitlines()
    return [line for line in lines[:-1] if line.strip()][-40:]


def render() -> None:
    out = ["# Results", "",
           "Regenerated by `make results` (all sections) or `python -m scripts.make_results --only NAME`. "
           "Each section names the command that produced its figures, when it ran, and how. Figures come from "
           "this repository's machines (2 CPU cores, no GPU) unless a section says otherwise.", ""]
    for s in SECTIONS:
        path = STORE / f"{s.name}.json"
        out += [f"## {s.title}", ""]
        if not path.exists():
            out += ["_Not measured yet._", ""]
            continue
        rec = json.loads(path.read_text())
        out += [f"Command: `{rec['command']}` · run {rec['date']} · {rec['seconds']} s", "", s.how, "",
                "| figure | value | goal |", "|---|---|---|"]
        for k, v in rec["figures"].items():
            out.append(f"| {k} | {v} | {s.goals.get(k, '')} |")
        if rec.get("table"):
            out += ["", "```", *rec["table"], "```"]
        out.append("")
    PAGE.write_text("\n".join(out))
    print(f"wrote {PAGE.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="section names to rerun")
    ap.add_argument("--render", action="store_true", help="only rewrite the page from stored figures")
    args = ap.parse_args()
    if not args.render:
        names = set(args.only or [s.name for s in SECTIONS])
        unknown = names - {s.name for s in SECTIONS}
        if unknown:
            raise SystemExit(f"unknown sections {sorted(unknown)}; have {[s.name for s in SECTIONS]}")
        for s in SECTIONS:
            if s.name in names:
                run_section(s)
    render()


if __name__ == "__main__":
    main()
