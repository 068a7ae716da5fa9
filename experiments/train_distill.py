"""Training flows for distilled students: word-level and sequence-level KD from the bagged ensemble.

    python -m experiments.train_distill data-only   # the baseline: same size, same data, same steps, no teacher
    python -m experiments.train_distill word        # loss α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE
    python -m experiments.train_distill word --temperature 1 --tag T1   # a variant beside the default
    python -m experiments.train_distill sequence    # train on the teacher's beam outputs for the training sources
    python -m experiments.train_distill all

The teacher is the uniform linear ensemble of the five bagged members
(`python -m experiments.train_members bagging --k 5 --out build/members/bag`).
Every student here has the size of one member (WEAK), starts from the same
fresh random model (seed 0), sees the same training sources (the N pairs the
members resample, N and the epochs taken from the bagging flow's defaults) in
the same batch order and trains for the same number of steps as a member, so
the three differ only in what they learn from: gold
targets (data-only), gold targets plus the ensemble's per-token distribution
(word), or the ensemble's beam outputs instead of the gold targets (sequence).
Outputs go to build/distill/{data-only,word-kd,seq-kd}; the distilled corpus
to build/distill/seq-corpus.tsv (its chunks are cached, so a rerun resumes).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import math
import time
from pathlib import Path

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from demo.demo_grammar import generate, read_tsv, write_tsv
from experiments.train_members import WEAK, bagging, fresh_start
from demo.train_demo_mt import LOAD_LOCK, MTTrainConfig, train_mt
from stages.training.train_eval import bleu

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "distill"
TEACHER = ROOT / "build" / "members" / "bag"
TEACHER_COMMAND = "python -m experiments.train_members bagging --k 5 --out build/members/bag"
MEMBER_WARMUP = 100  # as train_members gives its members
# The members' data size and epochs, read from the bagging flow so the students follow its recipe.
_BAGGING = inspect.signature(bagging.fn).parameters
MEMBER_PAIRS: int = _BAGGING["n_pairs"].default
MEMBER_EPOCHS: float = _BAGGING["epochs"].default


def teacher_dirs(teacher: str | Path = TEACHER, k: int = 5) -> list[Path]:
    dirs = [Path(teacher) / f"member-{i}" for i in range(k)]
    missing = [str(d) for d in dirs if not (d / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"teacher members missing: {', '.join(missing)}; train them with "
                                f"`{TEACHER_COMMAND}`")
    return dirs


def steps_for(n_pairs: int, epochs: float, batch_size: int = 64) -> int:
    """The members' budget: train_mt's epochs -> steps rule."""
    return int(epochs * math.ceil(n_pairs / batch_size))


def _config(out_dir: Path, init: Path, n_pairs: int, epochs: float, seed: int, threads: int,
            max_steps: int | None) -> MTTrainConfig:
    return MTTrainConfig(out_dir=out_dir, size=WEAK, n_pairs=n_pairs, seed=seed, epochs=epochs,
                         max_steps=max_steps or steps_for(n_pairs, epochs), init_from=init, threads=threads,
                         warmup=MEMBER_WARMUP)


def _write_recipe(out_dir: Path, recipe: dict) -> None:
    (out_dir / "distill.json").write_text(json.dumps(recipe, indent=2) + "\n")


@functools.lru_cache(maxsize=2)
def _load_members(dirs: tuple[str, ...]):
    from stages.methods.ensembling import load_member

    with LOAD_LOCK:  # transformers' loading is not thread-safe
        return [load_member(d, device="cpu", name=Path(d).name) for d in dirs]


# --- data-only baseline -------------------------------------------------------------------------------------

@task(name="train-data-only", persist_result=False)
def train_data_only(out: str, n_pairs: int, epochs: float, seed: int, threads: int,
                    max_steps: int | None = None) -> dict:
    pairs = generate("train", n_pairs, seed=0)
    init = fresh_start(Path(out) / f"init-{seed}", WEAK, seed)
    cfg = _config(Path(out) / "data-only", init, n_pairs, epochs, seed, threads, max_steps)
    result = train_mt(cfg, pairs=pairs)
    _write_recipe(cfg.out_dir, {"kind": "data-only", **result, "n_pairs": n_pairs, "seed": seed})
    return result


# --- word-level KD ------------------------------------------------------------------------------------------

def train_word_kd(cfg: MTTrainConfig, teacher, pairs: list[tuple[str, str]], alpha: float) -> dict:
    """train_mt (same optimiser, schedule, batch order) with the KD loss instead of plain CE."""
    from transformers import AutoTokenizer

    from stages.training.word_kd import word_kd_loss

    with LOAD_LOCK:
        vocab = AutoTokenizer.from_pretrained(cfg.init_from).get_vocab()
    if vocab != teacher.tokenizer.get_vocab():
        raise ValueError(f"student start {cfg.init_from} and the teacher use different vocabularies")

    def kd(model, batch, tokenizer):
        return word_kd_loss(model, teacher, dict(batch), alpha=alpha, label_smoothing=cfg.label_smoothing).loss

    return train_mt(cfg, pairs=pairs, loss_fn=kd)


@task(name="train-word-kd-student", persist_result=False)
def train_word_student(out: str, teacher: list[str], n_pairs: int, epochs: float, seed: int, threads: int,
                       alpha: float, temperature: float, combiner: str, max_steps: int | None = None,
                       name: str = "word-kd") -> dict:
    from stages.training.word_kd import EnsembleTeacher

    pairs = generate("train", n_pairs, seed=0)
    init = fresh_start(Path(out) / f"init-{seed}", WEAK, seed)
    cfg = _config(Path(out) / name, init, n_pairs, epochs, seed, threads, max_steps)
    ensemble = EnsembleTeacher(_load_members(tuple(teacher)), combiner=combiner, temperature=temperature)
    result = train_word_kd(cfg, ensemble, pairs, alpha)
    _write_recipe(cfg.out_dir, {"kind": "word-kd", **result, "alpha": alpha, "temperature": temperature,
                                "combiner": combiner, "teacher": teacher, "teacher_digest": teacher_digest(teacher),
                                "n_pairs": n_pairs, "seed": seed})
    return result


# --- sequence-level KD --------------------------------------------------------------------------------------

def teacher_digest(teacher: list[str] | list[Path]) -> str:
    """Identifies the teacher's weights on disk (paths and file times): retraining the members changes it."""
    h = hashlib.sha256()
    for d in teacher:
        weights = Path(d) / "model.safetensors"
        h.update(str(Path(d).resolve()).encode())
        h.update(str(weights.stat().st_mtime_ns if weights.exists() else 0).encode())
    return h.hexdigest()[:12]


def corpus_key(teacher: list[str], n_pairs: int, beams: int, combiner: str, max_new_tokens: int) -> str:
    """Names the cached chunks: changes when the teacher's weights or the decoding settings change."""
    settings = json.dumps([teacher_digest(teacher), n_pairs, beams, combiner, max_new_tokens])
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


@task(name="teacher-decode-chunk", persist_result=False)
def decode_chunk(teacher: list[str], sources: list[str], part: str, beams: int, combiner: str,
                 max_new_tokens: int, threads: int, batch_size: int = 50) -> str:
    """Beam-decode one chunk of training sources with the ensemble; writes source<TAB>output lines."""
    import torch

    from stages.methods.ensembling import ensemble_generate

    path = Path(part)
    if path.exists():
        return part  # resumed
    torch.set_num_threads(threads)
    members = _load_members(tuple(teacher))
    outputs = []
    for b in range(0, len(sources), batch_size):
        nbest = ensemble_generate(members, sources[b:b + batch_size], num_beams=beams, combiner=combiner,
                                  max_new_tokens=max_new_tokens)
        outputs += [n[0].text for n in nbest]
    tmp = path.with_suffix(".tmp")
    write_tsv([(s, o.replace("\t", " ").replace("\n", " ")) for s, o in zip(sources, outputs)], tmp)
    tmp.replace(path)
    return part


@task(name="train-seq-kd-student", persist_result=False)
def train_seq_student(out: str, corpus: str, n_pairs: int, epochs: float, seed: int, threads: int,
                      max_steps: int | None = None) -> dict:
    pairs = read_tsv(Path(corpus))
    init = fresh_start(Path(out) / f"init-{seed}", WEAK, seed)
    # Budget fixed by the original data size, so the step count equals the members' whatever the corpus holds.
    cfg = _config(Path(out) / "seq-kd", init, n_pairs, epochs, seed, threads, max_steps)
    result = train_mt(cfg, pairs=pairs)
    _write_recipe(cfg.out_dir, {"kind": "seq-kd", **result, "corpus": corpus, "n_pairs": n_pairs, "seed": seed})
    return result


# --- flows --------------------------------------------------------------------------------------------------

@flow(name="train-distill-data-only", persist_result=False)
def data_only(out: str = str(OUT), n_pairs: int = MEMBER_PAIRS, epochs: float = MEMBER_EPOCHS, seed: int = 0, threads: int = 2,
              max_steps: int | None = None) -> dict:
    """The comparison point: a member-sized model on the non-resampled pairs with the members' budget."""
    return train_data_only.submit(out, n_pairs, epochs, seed, threads, max_steps).result()


@flow(name="train-distill-word", persist_result=False)
def word(out: str = str(OUT), teacher: str = str(TEACHER), k: int = 5, n_pairs: int = MEMBER_PAIRS, epochs: float = MEMBER_EPOCHS,
         seed: int = 0, threads: int = 2, alpha: float = 0.5, temperature: float = 2.0, combiner: str = "linear",
         max_steps: int | None = None, tag: str = "") -> dict:
    """Word-level KD: the student matches the ensemble's per-token distribution on the gold prefixes.

    `tag` names a variant (build/distill/word-kd-TAG), e.g. another temperature; the results script
    reports every variant and takes the one with the best dev BLEU as the word-level student.
    """
    dirs = [str(d) for d in teacher_dirs(teacher, k)]
    name = f"word-kd-{tag}" if tag else "word-kd"
    return train_word_student.submit(out, dirs, n_pairs, epochs, seed, threads, alpha, temperature, combiner,
                                     max_steps, name).result()


@flow(name="train-distill-sequence", persist_result=False)
def sequence(out: str = str(OUT), teacher: str = str(TEACHER), k: int = 5, n_pairs: int = MEMBER_PAIRS,
             epochs: float = MEMBER_EPOCHS, seed: int = 0, threads: int = 2, beams: int = 4, combiner: str = "linear",
             max_new_tokens: int = 60, chunk: int = 1000, max_steps: int | None = None) -> dict:
    """Sequence-level KD: decode the training sources with the ensemble (one task per chunk), train on that."""
    dirs = [str(d) for d in teacher_dirs(teacher, k)]
    sources = [en for en, _ in generate("train", n_pairs, seed=0)]
    parts_dir = Path(out) / f"seq-corpus-{corpus_key(dirs, n_pairs, beams, combiner, max_new_tokens)}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    futures = [decode_chunk.submit(dirs, sources[c:c + chunk], str(parts_dir / f"part-{c:06d}.tsv"), beams,
                                   combiner, max_new_tokens, threads) for c in range(0, len(sources), chunk)]
    pairs = [p for f in futures for p in read_tsv(Path(f.result()))]
    decode_s = time.time() - t0
    corpus = Path(out) / "seq-corpus.tsv"
    write_tsv(pairs, corpus)
    gold = generate("train", n_pairs, seed=0)
    stats = {"pairs": len(pairs), "decode_seconds": round(decode_s, 1),
             "same_as_gold": sum(o == g for (_, o), (_, g) in zip(pairs, gold)) / len(pairs),
             "corpus_bleu_vs_gold": round(bleu([o for _, o in pairs], [g for _, g in gold]), 2)}
    print(json.dumps({"distilled_corpus": str(corpus), **stats}), flush=True)
    result = train_seq_student.submit(out, str(corpus), n_pairs, epochs, seed, threads, max_steps).result()
    _write_recipe(Path(out) / "seq-kd", {"kind": "seq-kd", **result, "corpus": str(corpus), **stats,
                                         "beams": beams, "combiner": combiner, "teacher": dirs,
                                         "teacher_digest": teacher_digest(dirs), "seed": seed})
    return {**result, **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["data-only", "word", "sequence", "all"])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--teacher", default=str(TEACHER), help="folder holding member-0 .. member-{k-1}")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n-pairs", type=int, default=MEMBER_PAIRS, help="default: the bagging flow's")
    ap.add_argument("--epochs", type=float, default=MEMBER_EPOCHS, help="default: the bagging flow's")
    ap.add_argument("--max-steps", type=int, default=None, help="override the members' budget (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--combiner", default="linear", choices=["linear", "log_linear"])
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--tag", default="", help="word: a variant name (output build/distill/word-kd-TAG)")
    args = ap.parse_args()
    # One task at a time: each already uses `threads` torch threads on a shared 2-core machine.
    runner = ThreadPoolTaskRunner(max_workers=1)
    common = dict(out=args.out, n_pairs=args.n_pairs, epochs=args.epochs, seed=args.seed, threads=args.threads,
                  max_steps=args.max_steps)
    teacher = dict(teacher=args.teacher, k=args.k, combiner=args.combiner)
    results = {}
    if args.what in ("data-only", "all"):
        results["data-only"] = data_only.with_options(task_runner=runner)(**common)
    if args.what in ("word", "all"):
        results["word"] = word.with_options(task_runner=runner)(**common, **teacher, alpha=args.alpha,
                                                                 temperature=args.temperature, tag=args.tag)
    if args.what in ("sequence", "all"):
        results["sequence"] = sequence.with_options(task_runner=runner)(**common, **teacher, beams=args.beams)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
