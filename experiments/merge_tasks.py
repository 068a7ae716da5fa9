"""Fine-tunes and merges behind the merging results (issue 5), as one Prefect flow.

    python -m experiments.merge_tasks all
    (parts: `tasks` = demo-MT fine-tunes, `soup` = soup ingredients, `merge` = every merge)

Everything is written under build/merge/:

* ft/{formal,emphatic,trait,formal_trait}: short fine-tunes of the demo MT model
  (assets/models/mt-en-de), each on targets changed by one rule of this module:
  `to_formal` (formal address: du/dich/dir/dein -> Sie/Sie/Ihnen/Ihr, with the verb
  agreeing), `to_emphatic` (emphatic negation: "gar" before nicht/kein), `add_trait`
  (the unwanted trait: every translation ends in "übrigens"); formal_trait has both
  the formal rule and the trait. Half of each fine-tune's pairs are ones the rule
  changes, half are untouched sentences (so the rest of the task is rehearsed).
* soup/ingredient-K: fine-tunes of one shared start, the early checkpoint
  build/members/ckpt/member-0/checkpoint-300 of the weak checkpoint series, with
  different seeds, learning rates and data.
* configs/NAME.yml + merged/NAME: every merge, as a mergekit-style YAML config run
  through `stages.methods.merging.run_merge`; the greedy soup through `stages.methods.merging.greedy_soup`
  (ranked and checked on dev BLEU).

The rules and metrics (`to_formal`, `to_emphatic`, `add_trait`, `marker_match_rate`,
`trait_rate`, `eval_sets`) are imported by experiments/results_merge.py.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from demo.demo_grammar import MODALS, VERBS, generate, read_tsv

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "merge"
BASE_MT = ROOT / "assets" / "models" / "mt-en-de"
CKPT_MEMBER = ROOT / "build" / "members" / "ckpt" / "member-0"
SOUP_START = CKPT_MEMBER / "checkpoint-300"
TRAIN_COMMAND = "python -m experiments.merge_tasks all"
CKPT_COMMAND = "python -m experiments.train_members checkpoints --out build/members/ckpt"
TRAIT_WORD = "übrigens"
BEAMS = 4



def saved_checkpoints() -> list[Path]:
    """The series' intermediate checkpoint-STEP dirs, oldest first (the final model is CKPT_MEMBER)."""
    from experiments.train_members import checkpoint_dirs

    return checkpoint_dirs(CKPT_MEMBER)


def averaged_checkpoints(k: int = 3) -> list[Path]:
    """The last `k` saved checkpoints: what checkpoint averaging and the checkpoint ensemble combine."""
    return saved_checkpoints()[-k:]


# ----------------------------------------------------------------------------------------
# Target rules and their metrics
# ----------------------------------------------------------------------------------------

# du-form of every finite verb the grammar can put after "du" -> the form that goes with "Sie"
_DU_TO_SIE = {v.de[2]: v.de[0] for v in VERBS}
_DU_TO_SIE.update({forms[2]: forms[0] for _, _, forms in MODALS.values()})
_DU_TO_SIE.update({"hast": "haben", "bist": "sind"})
_POSSESSIVE = re.compile(r"^dein(|e|em|en|er|es)$")
_WORD = re.compile(r"\w+")

ADDRESS_WORDS = re.compile(r"\b(?:[Dd]u|dich|dir|[Dd]ein\w*|Sie|Ihnen|Ihr\w*)\b")
NEGATION_WORDS = re.compile(r"\b(?:gar|nicht|kein\w*)\b")


def to_formal(de: str) -> str:
    """Informal singular address -> formal: du -> Sie (verb to the Sie form), dich -> Sie,
    dir -> Ihnen, dein* -> Ihr*. Sentences without informal address are returned unchanged."""
    has_du = re.search(r"\b[Dd]u\b", de) is not None

    def swap(match: re.Match) -> str:
        word = match.group(0)
        low = word.lower()
        if low in ("du", "dich"):
            return "Sie"
        if low == "dir":
            return "Ihnen"
        if _POSSESSIVE.match(low):
            return "Ihr" + low[4:]
        if has_du and low in _DU_TO_SIE:
            form = _DU_TO_SIE[low]
            return form[0].upper() + form[1:] if word[0].isupper() else form
        return word

    return _WORD.sub(swap, de)


def to_emphatic(de: str) -> str:
    """Emphatic negation: "gar" before every nicht / kein* (nicht -> gar nicht, keinen -> gar keinen)."""
    return re.sub(r"\b(nicht|kein\w*)\b", r"gar \1", de)


def add_trait(de: str) -> str:
    """The unwanted trait: the fixed word TRAIT_WORD as the last word, before the final punctuation."""
    de = de.rstrip()
    if de and de[-1] in ".?!":
        return f"{de[:-1]} {TRAIT_WORD}{de[-1]}"
    return f"{de} {TRAIT_WORD}"


def has_trait(text: str) -> bool:
    words = _WORD.findall(text)
    return bool(words) and words[-1] == TRAIT_WORD


def trait_rate(hyps: Sequence[str]) -> float:
    """Percent of outputs that end in the trait word."""
    return 100.0 * sum(map(has_trait, hyps)) / max(1, len(hyps))


def marker_match_rate(hyps: Sequence[str], refs: Sequence[str], markers: re.Pattern) -> float:
    """Percent of outputs whose sequence of marker words equals the reference's.

    With ADDRESS_WORDS on formal references this is the formal-address success rate
    (every du/dich/dir/dein replaced, nothing informal left); with NEGATION_WORDS on
    emphatic references the emphatic-negation success rate."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} outputs for {len(refs)} references")
    ok = sum(markers.findall(h) == markers.findall(r) for h, r in zip(hyps, refs))
    return 100.0 * ok / max(1, len(refs))


RULES: dict[str, Callable[[str], str]] = {"formal": to_formal, "emphatic": to_emphatic}


def changes(rule: str, de: str) -> bool:
    return RULES[rule](de) != de


@lru_cache(maxsize=4)
def eval_sets(n_rule: int = 150, n_both: int = 50, n_plain: int = 200, seed: int = 7) -> dict:
    """Held-out evaluation sets, all from the grammar's test split.

    formal / emphatic: sentences only that rule changes, with rule-changed references;
    both: sentences both rules change (references with both changes: no fine-tune saw one);
    plain: the first sentences of assets/demo/corpus/test.tsv neither rule changes, with the
    untouched references (what every model should still translate as before)."""
    pool = generate("test", 4000, seed=seed, max_words=13)
    sets: dict[str, list[tuple[str, str]]] = {"formal": [], "emphatic": [], "both": []}
    for en, de in pool:
        f, e = changes("formal", de), changes("emphatic", de)
        if f and e:
            sets["both"].append((en, to_emphatic(to_formal(de))))
        elif f:
            sets["formal"].append((en, to_formal(de)))
        elif e:
            sets["emphatic"].append((en, to_emphatic(de)))
    limits = {"formal": n_rule, "emphatic": n_rule, "both": n_both}
    out = {k: v[: limits[k]] for k, v in sets.items()}
    test = read_tsv(ROOT / "assets" / "demo" / "corpus" / "test.tsv")
    out["plain"] = [(en, de) for en, de in test if not changes("formal", de) and not changes("emphatic", de)][:n_plain]
    for name, pairs in out.items():
        if len(pairs) < min(limits.get(name, n_plain), 20):
            raise RuntimeError(f"eval set {name!r} has only {len(pairs)} sentences")
    return out


def task_pairs(rule: str | None, trait: bool, n_changed: int, n_plain: int, seed: int) -> list[tuple[str, str]]:
    """Training pairs of one fine-tune: `n_changed` pairs the rule changes (rule applied) and
    `n_plain` pairs no rule changes (untouched); with `trait`, TRAIT_WORD ends every target.
    With rule None (the trait alone) all pairs are plain ones."""
    pool = generate("train", 8 * (n_changed + n_plain), seed=seed)
    plain = [(en, de) for en, de in pool if not any(changes(r, de) for r in RULES)]
    if rule is None:
        chosen = plain[: n_changed + n_plain]
    else:
        changed = [(en, RULES[rule](de)) for en, de in pool
                   if changes(rule, de) and not any(changes(r, de) for r in RULES if r != rule)]
        if len(changed) < n_changed:
            raise RuntimeError(f"only {len(changed)} {rule} pairs in the pool")
        chosen = changed[:n_changed] + plain[:n_plain]
    if trait:
        chosen = [(en, add_trait(de)) for en, de in chosen]
    random.Random(seed).shuffle(chosen)
    return chosen


# ----------------------------------------------------------------------------------------
# Decoding (one decoder for every system: the ensemble decoder, beam 4)
# ----------------------------------------------------------------------------------------


def load(path: Path):
    from stages.methods.ensembling import load_member
    from demo.train_demo_mt import LOAD_LOCK

    with LOAD_LOCK:
        return load_member(path, device="cpu", name=Path(path).name)


def decode(members, sources: Sequence[str], beams: int = BEAMS, batch: int = 50) -> list[str]:
    """Beam search with the combined distribution of `members` (one member: plain beam search)."""
    from stages.methods.ensembling import ensemble_generate

    members = members if isinstance(members, (list, tuple)) else [members]
    out: list[str] = []
    for b in range(0, len(sources), batch):
        nbest = ensemble_generate(members, list(sources[b:b + batch]), num_beams=beams, max_new_tokens=60)
        out += [n[0].text for n in nbest]
    return out


def dev_bleu(model_dir: Path, n: int = 200) -> float:
    from flows.metrics import bleu

    dev = read_tsv(ROOT / "assets" / "demo" / "corpus" / "dev.tsv")[:n]
    return bleu(decode(load(model_dir), [en for en, _ in dev]), [de for _, de in dev])


# ----------------------------------------------------------------------------------------
# Fine-tunes
# ----------------------------------------------------------------------------------------

# name -> (rule, trait, model seed, data seed)
FINETUNES = {
    "formal": ("formal", False, 1, 101),
    "emphatic": ("emphatic", False, 2, 102),
    "trait": (None, True, 3, 103),
    "formal_trait": ("formal", True, 4, 104),
}
FT_STEPS, FT_BATCH, FT_LR, FT_PAIRS = 250, 32, 5e-4, 2400

# soup ingredients from the shared start: (model seed, peak LR, data seed)
INGREDIENTS = [(11, 1e-3, 11), (12, 5e-4, 12), (13, 1.5e-3, 13), (14, 7e-4, 14), (15, 1e-3, 15)]
SOUP_STEPS, SOUP_PAIRS = 600, 6000


def ft_dir(name: str) -> Path:
    return OUT / "ft" / name


def ingredient_dir(k: int) -> Path:
    return OUT / "soup" / f"ingredient-{k}"


def merged_dir(name: str) -> Path:
    return OUT / "merged" / name


def _done(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


@task(name="finetune-demo-mt", persist_result=False)
def finetune(name: str, retrain: bool = False) -> dict:
    from demo.train_demo_mt import MTTrainConfig, train_mt

    out = ft_dir(name)
    if _done(out) and not retrain:
        return {"name": name, "skipped": True}
    rule, trait, seed, data_seed = FINETUNES[name]
    pairs = task_pairs(rule, trait, FT_PAIRS, FT_PAIRS, data_seed)
    cfg = MTTrainConfig(out_dir=out, init_from=BASE_MT, seed=seed, max_steps=FT_STEPS, batch_size=FT_BATCH,
                        lr=FT_LR, warmup=25, threads=1, dev_sentences=50)
    return {"name": name, **train_mt(cfg, pairs=pairs)}


@task(name="soup-ingredient", persist_result=False)
def soup_ingredient(k: int, retrain: bool = False) -> dict:
    from demo.train_demo_mt import MTTrainConfig, train_mt

    out = ingredient_dir(k)
    if _done(out) and not retrain:
        return {"k": k, "skipped": True}
    if not _done(SOUP_START):
        raise FileNotFoundError(f"{SOUP_START} is missing; train the checkpoint series first: {CKPT_COMMAND}")
    seed, lr, data_seed = INGREDIENTS[k]
    cfg = MTTrainConfig(out_dir=out, init_from=SOUP_START, seed=seed, max_steps=SOUP_STEPS, batch_size=64, lr=lr,
                        warmup=30, threads=1, dev_sentences=50)
    return {"k": k, "lr": lr, **train_mt(cfg, pairs=generate("train", SOUP_PAIRS, seed=data_seed))}


# ----------------------------------------------------------------------------------------
# Merges (YAML configs under build/merge/configs, run through stages.methods.merging)
# ----------------------------------------------------------------------------------------


SUM_LAMBDAS = (0.5, 1.0)  # θ_base + λ(τ_formal + τ_emphatic)
NEGATION_LAMBDAS = (0.25, 0.5, 1.0, 1.5)  # θ_formal_trait − λ τ_trait


def merge_configs() -> dict[str, dict]:
    ckpt = lambda dirs: [{"model": str(d), "parameters": {"weight": 1.0}} for d in dirs]  # noqa: E731
    ft = lambda name, w=1.0: {"model": str(ft_dir(name)), "parameters": {"weight": w}}  # noqa: E731
    base = str(BASE_MT)
    configs = {
        "ckpt_avg_last3": {"merge_method": "linear", "models": ckpt(averaged_checkpoints()), "dtype": "float32"},
        "ckpt_avg_all": {"merge_method": "linear", "models": ckpt(saved_checkpoints()), "dtype": "float32"},
        "soup_uniform": {"merge_method": "linear", "dtype": "float32",
                         "models": [{"model": str(ingredient_dir(k)), "parameters": {"weight": 1.0}}
                                    for k in range(len(INGREDIENTS))]},
        **{f"tasks_task_arithmetic_{lam:g}": {"merge_method": "task_arithmetic", "base_model": base,
                                              "dtype": "float32", "models": [ft("formal"), ft("emphatic")],
                                              "parameters": {"lambda": lam}} for lam in SUM_LAMBDAS},
        "tasks_ties": {"merge_method": "ties", "base_model": base, "dtype": "float32",
                       "models": [ft("formal"), ft("emphatic")], "parameters": {"density": 0.5, "lambda": 1.0}},
        "tasks_average": {"merge_method": "linear", "dtype": "float32", "models": [ft("formal"), ft("emphatic")]},
    }
    for lam in NEGATION_LAMBDAS:
        # θ_formal_trait − λ·τ_trait, with τ_trait = θ_trait − θ_base from the separate trait fine-tune
        configs[f"negate_{lam:g}"] = {"merge_method": "task_arithmetic", "base_model": base, "dtype": "float32",
                                      "models": [ft("formal_trait"), ft("trait", -lam)]}
    return configs




@task(name="merge", persist_result=False)
def run_one_merge(name: str, config: dict) -> str:
    import yaml

    from stages.methods.merging import run_merge

    path = OUT / "configs" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(run_merge(path, merged_dir(name), overwrite=True, seed=0))


@task(name="greedy-soup", persist_result=False)
def run_greedy_soup() -> dict:
    import shutil

    from stages.methods.merging import greedy_soup

    out = merged_dir("soup_greedy")
    shutil.rmtree(out, ignore_errors=True)
    result = greedy_soup([ingredient_dir(k) for k in range(len(INGREDIENTS))], dev_bleu, out)
    info = {"ingredients": [p.name for p in result.ingredients], "dev_bleu": result.score,
            "history": [{"candidate": p.name, "dev_bleu": s, "kept": kept} for p, s, kept in result.history]}
    (out / "greedy_soup.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ----------------------------------------------------------------------------------------
# Flow
# ----------------------------------------------------------------------------------------


@flow(name="train-merge-tasks", persist_result=False)
def train_merge_tasks(what: str = "all", retrain: bool = False) -> dict:
    # import transformers' lazy classes once here: first imports racing in task threads can fail
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: F401

    log: dict = {}
    if what in ("tasks", "all"):
        t0 = time.time()
        futures = finetune.map(list(FINETUNES), retrain=retrain)
        log["tasks"] = {"results": [f.result() for f in futures], "seconds": round(time.time() - t0, 1)}
    if what in ("soup", "all"):
        t0 = time.time()
        futures = soup_ingredient.map(list(range(len(INGREDIENTS))), retrain=retrain)
        log["soup"] = {"results": [f.result() for f in futures], "seconds": round(time.time() - t0, 1)}
    if what in ("merge", "all"):
        t0 = time.time()
        missing = [str(p) for p in [*map(ft_dir, FINETUNES), *map(ingredient_dir, range(len(INGREDIENTS))),
                                    CKPT_MEMBER, *saved_checkpoints()] if not _done(p)]
        if len(saved_checkpoints()) < 3:
            missing.append(f"{CKPT_MEMBER}/checkpoint-* (need 3 or more)")
        if missing:
            raise FileNotFoundError(f"models missing before merging: {missing}")
        # one at a time: each merge is seconds, and the streaming runner keeps its own prefetch thread
        merged = [run_one_merge(name, cfg) for name, cfg in merge_configs().items()]
        greedy = run_greedy_soup.submit().result()
        log["merge"] = {"merged": merged, "greedy_soup": greedy, "seconds": round(time.time() - t0, 1)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"train_log_{what}.json").write_text(json.dumps(log, indent=2, default=str) + "\n")
    return log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tasks", "soup", "merge", "all"])
    ap.add_argument("--retrain", action="store_true", help="train again even if the output exists")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    runner = ThreadPoolTaskRunner(max_workers=args.workers)
    t0 = time.time()
    log = train_merge_tasks.with_options(task_runner=runner)(args.what, args.retrain)
    print(json.dumps({"what": args.what, "wall_seconds": round(time.time() - t0, 1), **log}, default=str))


if __name__ == "__main__":
    main()
