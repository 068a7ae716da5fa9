"""Merging on the demo task (issue 5): checkpoint averaging, soups, task vectors, negation.

    .venv/bin/python -m experiments.results_merge [--sentences 300]

Needs the weak checkpoint series (experiments.train_members checkpoints) and the fine-tunes and
merges of experiments.merge_tasks (build/merge/); it trains nothing and fails naming the
command when a model is missing. Every system is decoded the same way (the ensemble
decoder, beam 4, which for one model is plain beam search) on held-out test sentences:

(a) last checkpoint vs averaged checkpoints vs the checkpoint ensemble (quality, decode cost);
(b) soup ingredients (one shared start) vs uniform and greedy soup (greedy: ranked and
    checked on dev, reported on test);
(c) base + τ_formal + τ_emphatic by task arithmetic, TIES and plain averaging: each
    sub-task's success rate and BLEU against its own references, both at once, and BLEU
    on untouched sentences;
(d) negation: θ_formal_trait − λ·τ_trait, τ_trait = θ_trait − θ_base from a separate
    fine-tune: trait rate, BLEU against clean references, formal skill kept.

Prints two tables ((a)+(b) on the weak model, (c)+(d) on the demo MT model), writes every
figure to build/merge/results_full.json, and prints the headline figures as one flat JSON
line (the last line).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import print_json_line, print_table
from flows.metrics import bleu
from demo.demo_grammar import read_tsv
from experiments.merge_tasks import (ADDRESS_WORDS, BASE_MT, BEAMS, CKPT_COMMAND, CKPT_MEMBER, FINETUNES,
                                       INGREDIENTS, NEGATION_LAMBDAS, NEGATION_WORDS, ROOT, SOUP_START, SUM_LAMBDAS,
                                       TRAIN_COMMAND, averaged_checkpoints, decode, eval_sets, ft_dir, ingredient_dir,
                                       load, marker_match_rate, merged_dir, trait_rate)


def _exists(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def check_models() -> None:
    ckpts = [CKPT_MEMBER, SOUP_START, *averaged_checkpoints()]
    missing = [p for p in ckpts if not _exists(p)]
    if len(averaged_checkpoints()) < 3:
        missing.append(CKPT_MEMBER / "checkpoint-*")
    if missing:
        sys.exit(f"missing checkpoint series models {[str(p.relative_to(ROOT)) for p in missing]}; "
                 f"train them with:\n  {CKPT_COMMAND}\nthen:\n  {TRAIN_COMMAND}")
    ours = [*map(ft_dir, FINETUNES), *map(ingredient_dir, range(len(INGREDIENTS))),
            *map(merged_dir, ["ckpt_avg_last3", "ckpt_avg_all", "soup_uniform", "soup_greedy", "tasks_ties",
                              "tasks_average"]),
            *(merged_dir(f"tasks_task_arithmetic_{lam:g}") for lam in SUM_LAMBDAS),
            *(merged_dir(f"negate_{lam:g}") for lam in NEGATION_LAMBDAS)]
    missing = [p for p in ours if not _exists(p)]
    if missing:
        sys.exit(f"missing fine-tuned or merged models {[str(p.relative_to(ROOT)) for p in missing]}; "
                 f"train and merge them with:\n  {TRAIN_COMMAND}")


class Runner:
    """Decodes a system once per source list, timing it; models are loaded on first use."""

    def __init__(self) -> None:
        self.cache: dict[Path, object] = {}
        self.seconds: dict[str, float] = {}

    def member(self, path: Path):
        if path not in self.cache:
            self.cache[path] = load(path)
        return self.cache[path]

    def run(self, name: str, paths: list[Path], sources: list[str]) -> list[str]:
        members = [self.member(p) for p in paths]
        start = time.perf_counter()
        hyps = decode(members, sources)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return hyps


def r2(x: float) -> float:
    return round(float(x), 2)


WEAK_HEADER = ["part", "system", "test BLEU", "dev BLEU", "decode cost (× one model)", "seconds", "notes"]
DEMO_HEADER = ["part", "system", "formal %", "formal BLEU", "emphatic %", "emphatic BLEU", "both %", "both BLEU",
               "untouched BLEU", "untouched trait %"]


def part_checkpoints(runner: Runner, src: list[str], ref: list[str], rows: list) -> dict:
    last3 = averaged_checkpoints()
    n_all = len(yaml.safe_load((merged_dir("ckpt_avg_all") / "merge_config.yml").read_text())["models"])
    systems = {
        "last checkpoint (final model)": [CKPT_MEMBER],
        **{p.name: [p] for p in last3},
        "average of last 3 checkpoints": [merged_dir("ckpt_avg_last3")],
        f"average of all {n_all} checkpoints": [merged_dir("ckpt_avg_all")],
        "ensemble of last 3 checkpoints": last3,
    }
    fig = {}
    for name, paths in systems.items():
        hyps = runner.run(f"a:{name}", paths, src)
        value = r2(bleu(hyps, ref))
        secs = runner.seconds[f"a:{name}"]
        if "average" in name:  # the steps the merge config averaged
            merged = yaml.safe_load((paths[0] / "merge_config.yml").read_text())["models"]
            note = "steps " + "+".join(m["model"].rsplit("-", 1)[-1] for m in merged)
        else:
            note = "steps " + "+".join(p.name.replace("checkpoint-", "") for p in paths) if len(paths) > 1 else ""
        rows.append(["(a)", name, value, "", len(paths), round(secs, 2), note])
        fig[name] = {"bleu": value, "decode_cost": len(paths), "seconds": r2(secs)}
    return fig


def part_soups(runner: Runner, src: list[str], ref: list[str], dev_n: int, rows: list) -> dict:
    dev = read_tsv(ROOT / "assets" / "demo" / "corpus" / "dev.tsv")[:dev_n]
    dsrc, dref = [e for e, _ in dev], [d for _, d in dev]
    greedy_info = json.loads((merged_dir("soup_greedy") / "greedy_soup.json").read_text())
    systems = {"shared start (checkpoint-300)": SOUP_START,
               **{f"ingredient-{k}": ingredient_dir(k) for k in range(len(INGREDIENTS))},
               "uniform soup": merged_dir("soup_uniform"),
               "greedy soup": merged_dir("soup_greedy")}
    fig = {}
    for name, path in systems.items():
        dev_bleu = r2(bleu(runner.run(f"b-dev:{name}", [path], dsrc), dref))
        test_bleu = r2(bleu(runner.run(f"b:{name}", [path], src), ref))
        note = ""
        if name.startswith("ingredient-"):
            seed, lr, data_seed = INGREDIENTS[int(name.split("-")[1])]
            note = f"lr {lr:g}, seed {seed}, data seed {data_seed}"
        elif name == "greedy soup":
            note = "kept " + "+".join(i.replace("ingredient-", "") for i in greedy_info["ingredients"])
        elif name == "uniform soup":
            note = f"all {len(INGREDIENTS)}"
        rows.append(["(b)", name, test_bleu, dev_bleu, 1, round(runner.seconds[f"b:{name}"], 2), note])
        fig[name] = {"dev_bleu": dev_bleu, "test_bleu": test_bleu}
    ingredients = [f"ingredient-{k}" for k in range(len(INGREDIENTS))]
    best_dev = max(ingredients, key=lambda k: fig[k]["dev_bleu"])
    return {"systems": fig, "greedy_ingredients": greedy_info["ingredients"], "greedy_history": greedy_info["history"],
            "best_ingredient_by_dev": best_dev}


def score_sets(runner: Runner, name: str, path: Path, sets: dict) -> dict:
    out = {}
    for set_name, pairs in sets.items():
        src, ref = [e for e, _ in pairs], [d for _, d in pairs]
        hyps = runner.run(f"{name}:{set_name}", [path], src)
        out[set_name] = {"bleu": r2(bleu(hyps, ref)), "trait_rate": r2(trait_rate(hyps))}
        if set_name in ("formal", "both"):
            out[set_name]["formal_rate"] = r2(marker_match_rate(hyps, ref, ADDRESS_WORDS))
        if set_name in ("emphatic", "both"):
            out[set_name]["emphatic_rate"] = r2(marker_match_rate(hyps, ref, NEGATION_WORDS))
        if set_name == "both":
            both = [marker_match_rate([h], [r], ADDRESS_WORDS) == 100
                    and marker_match_rate([h], [r], NEGATION_WORDS) == 100 for h, r in zip(hyps, ref)]
            out[set_name]["both_rate"] = r2(100.0 * sum(both) / len(both))
    return out


def demo_systems() -> dict[str, tuple[str, Path]]:
    """(c) and (d): name -> (part, model dir); every one is scored on all four sets."""
    return {
        "base (demo MT)": ("(c)(d)", BASE_MT),
        "fine-tune formal": ("(c)", ft_dir("formal")),
        "fine-tune emphatic": ("(c)", ft_dir("emphatic")),
        **{f"task arithmetic λ={lam:g}": ("(c)", merged_dir(f"tasks_task_arithmetic_{lam:g}"))
           for lam in SUM_LAMBDAS},
        "TIES (density 0.5, λ=1)": ("(c)", merged_dir("tasks_ties")),
        "average of the two fine-tunes": ("(c)", merged_dir("tasks_average")),
        "fine-tune trait (gives τ_trait)": ("(d)", ft_dir("trait")),
        "fine-tune formal+trait (θ)": ("(d)", ft_dir("formal_trait")),
        **{f"θ − {lam:g}·τ_trait": ("(d)", merged_dir(f"negate_{lam:g}")) for lam in NEGATION_LAMBDAS},
    }


def part_demo(runner: Runner, sets: dict, rows: list) -> dict:
    fig = {}
    for name, (part, path) in demo_systems().items():
        s = score_sets(runner, f"cd:{name}", path, sets)
        fig[name] = s
        rows.append([part, name, s["formal"]["formal_rate"], s["formal"]["bleu"], s["emphatic"]["emphatic_rate"],
                     s["emphatic"]["bleu"], s["both"]["both_rate"], s["both"]["bleu"], s["plain"]["bleu"],
                     s["plain"]["trait_rate"]])
    return fig


def headline(a: dict, b: dict, cd: dict) -> dict:
    """The figures for the results page (flat); everything else goes to build/merge/results_full.json."""
    last, ens = a["last checkpoint (final model)"], a["ensemble of last 3 checkpoints"]
    avg_all = next(v for k, v in a.items() if k.startswith("average of all"))
    soups = b["systems"]
    ingredients = [v["test_bleu"] for k, v in soups.items() if k.startswith("ingredient-")]
    out = {
        "ckpt_last_bleu": last["bleu"], "ckpt_avg_last3_bleu": a["average of last 3 checkpoints"]["bleu"],
        "ckpt_avg_all_bleu": avg_all["bleu"], "ckpt_ensemble_last3_bleu": ens["bleu"],
        "ckpt_ensemble_decode_time_ratio": r2(ens["seconds"] / last["seconds"]),
        "soup_start_bleu": soups["shared start (checkpoint-300)"]["test_bleu"],
        "soup_best_ingredient_bleu": soups[b["best_ingredient_by_dev"]]["test_bleu"],
        "soup_mean_ingredient_bleu": r2(sum(ingredients) / len(ingredients)),
        "soup_uniform_bleu": soups["uniform soup"]["test_bleu"], "soup_greedy_bleu": soups["greedy soup"]["test_bleu"],
        "soup_greedy_ingredients": "+".join(b["greedy_ingredients"]),
        "ft_formal_formal_rate": cd["fine-tune formal"]["formal"]["formal_rate"],
        "ft_emphatic_emphatic_rate": cd["fine-tune emphatic"]["emphatic"]["emphatic_rate"],
    }
    for key, name in (("task_arithmetic", "task arithmetic λ=1"), ("ties", "TIES (density 0.5, λ=1)"),
                      ("average", "average of the two fine-tunes")):
        s = cd[name]
        out.update({f"{key}_formal_rate": s["formal"]["formal_rate"],
                    f"{key}_emphatic_rate": s["emphatic"]["emphatic_rate"],
                    f"{key}_both_rate": s["both"]["both_rate"], f"{key}_untouched_bleu": s["plain"]["bleu"]})
    theta = cd["fine-tune formal+trait (θ)"]
    out.update({"trait_model_trait_rate": theta["plain"]["trait_rate"],
                "trait_model_untouched_bleu": theta["plain"]["bleu"],
                "trait_model_formal_rate": theta["formal"]["formal_rate"]})
    for lam in (0.5, 1.0):
        s = cd[f"θ − {lam:g}·τ_trait"]
        out.update({f"negated_{lam:g}_trait_rate": s["plain"]["trait_rate"],
                    f"negated_{lam:g}_untouched_bleu": s["plain"]["bleu"],
                    f"negated_{lam:g}_formal_rate": s["formal"]["formal_rate"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=300, help="test.tsv sentences for (a) and (b)")
    ap.add_argument("--dev", type=int, default=200, help="dev.tsv sentences for the soup ranking check")
    args = ap.parse_args()
    os.environ.setdefault("COLUMNS", "200")  # rich wraps the wide tables at 80 columns when piped
    check_models()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    test = read_tsv(ROOT / "assets" / "demo" / "corpus" / "test.tsv")[: args.sentences]
    src, ref = [e for e, _ in test], [d for _, d in test]
    sets = eval_sets()
    runner = Runner()
    weak_rows: list = []
    demo_rows: list = []
    a = part_checkpoints(runner, src, ref, weak_rows)
    b = part_soups(runner, src, ref, args.dev, weak_rows)
    cd = part_demo(runner, sets, demo_rows)
    print_table(f"(a) checkpoints, (b) soups, weak d=96 model: BLEU on {len(src)} test / {args.dev} dev sentences, "
                f"beam {BEAMS}", WEAK_HEADER, weak_rows)
    n = {k: len(v) for k, v in sets.items()}
    print_table(f"(c) task vectors, (d) negation, demo MT: rates %, BLEU vs each set's own references; test sentences: "
                f"formal {n['formal']}, emphatic {n['emphatic']}, both {n['both']}, untouched {n['plain']}",
                DEMO_HEADER, demo_rows)
    seconds = r2(time.perf_counter() - t0)
    full = {"decoding": f"beam {BEAMS}", "test_sentences": len(src), "dev_sentences": args.dev, "task_sets": n,
            "checkpoints": a, "soups": b, "task_vectors_and_negation": cd, "seconds": seconds}
    (ROOT / "build" / "merge" / "results_full.json").write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n")
    print_json_line({**headline(a, b, cd), "seconds": seconds,
                     "setup": {"beams": BEAMS, "sentences": len(src), "dev": args.dev}})


if __name__ == "__main__":
    main()
