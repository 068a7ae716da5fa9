"""Training flows for masked LMs on the demo grammar: a CMLM for Mask-Predict, and an English MLM for repair.

    python -m experiments.train_cmlm cmlm --out build/cmlm            # EN->DE CMLM (stages/methods/refinement/cmlm.py)
    python -m experiments.train_cmlm mlm --out build/mlm-en           # English BertForMaskedLM (masked diffusion)
    python -m experiments.train_cmlm cmlm --out /tmp/cmlm --max-steps 20 --pairs 500 --dev 20   # a smoke run

CMLM training (Ghazvininejad et al. 2019): for every target of N tokens pick
k ~ Uniform{1…N}, mask k random positions, predict them (cross-entropy on the
masked positions only) and predict N from the pooled encoder (weighted by
`length_loss_weight`). The CMLM shares the demo MT tokenizer. At the end the
dev set is decoded with Mask-Predict for several T, so BLEU against T lands in
the result (and in `eval.json` next to the model).

The MLM is a small BERT with its own WordPiece vocabulary over the grammar's
English side, trained with the usual 15 % masking (80 % [MASK], 10 % random,
10 % kept), for masked-diffusion repair of ASR transcripts.

Both train with the training layer's recipes (`cascade train cmlm` / `cascade train mlm`,
stages/training/masked_lm_recipes.py): this file only makes the demo data, the MLM's
vocabulary and config, and the BLEU-against-T evaluation.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from pydantic import BaseModel

from prefect import flow, task
from demo.demo_grammar import generate, read_tsv

ROOT = Path(__file__).resolve().parents[1]
DEMO_MT = ROOT / "assets" / "models" / "mt-en-de"
DEV_TSV = ROOT / "assets" / "demo" / "corpus" / "dev.tsv"


class Schedule(BaseModel):
    max_steps: int = 3000
    max_minutes: float = 1e9
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 300
    seed: int = 0
    threads: int = 2

    def options(self) -> dict:
        """The training layer's loop settings (stages/training/recipe_options.py)."""
        return {"steps": self.max_steps, "batch_size": self.batch_size, "lr": self.lr, "warmup": self.warmup,
                "seed": self.seed, "threads": self.threads, "resume": False,
                "max_minutes": self.max_minutes if self.max_minutes < 1e9 else None}


def write_pairs(pairs: list[tuple[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"source": s, "target": t}, ensure_ascii=False) + "\n" for s, t in pairs),
                    encoding="utf-8")
    return path


# -- CMLM ------------------------------------------------------------------------


class CMLMTrainConfig(BaseModel):
    out_dir: Path = Path("build/cmlm")
    tokenizer_from: Path = DEMO_MT
    d_model: int = 160
    layers: int = 3
    heads: int = 4
    ffn: int = 640
    max_target_length: int = 48
    n_pairs: int = 40_000
    data_seed: int = 0
    distill_from: Path | None = None  # sequence-level KD: train on this AR model's beam outputs
    label_smoothing: float = 0.1
    length_loss_weight: float = 0.1
    schedule: Schedule = Schedule()
    dev_sentences: int = 200
    eval_iterations: list[int] = [1, 2, 4, 10]
    length_beam: int = 3


@task(name="train-cmlm", persist_result=False)
def train_cmlm_task(cfg: CMLMTrainConfig) -> dict:
    """The grammar's pairs (or an AR teacher's translations of them) -> `cascade train cmlm`'s recipe."""
    from stages.methods.refinement.cmlm import load_cmlm
    from stages.methods.refinement.mask_predict_steps import mask_predict
    from stages.training.masked_lm_recipes import CMLMOptions, run_cmlm
    from stages.training.train_eval import bleu

    torch.set_num_threads(cfg.schedule.threads)
    pairs = generate("train", cfg.n_pairs, seed=cfg.data_seed)
    if cfg.distill_from is not None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from stages.training.train_eval import translate

        teacher = AutoModelForSeq2SeqLM.from_pretrained(cfg.distill_from)
        tok = AutoTokenizer.from_pretrained(cfg.distill_from)
        pairs = list(zip([s for s, _ in pairs], translate(teacher, tok, [s for s, _ in pairs])))
    data = write_pairs(pairs, cfg.out_dir.parent / f"{cfg.out_dir.name}-data" / "train.jsonl")
    trained = run_cmlm(CMLMOptions(
        data=data, model=str(cfg.tokenizer_from), out=cfg.out_dir, d_model=cfg.d_model, layers=cfg.layers,
        heads=cfg.heads, ffn=cfg.ffn, max_target_length=cfg.max_target_length, label_smoothing=cfg.label_smoothing,
        length_loss_weight=cfg.length_loss_weight, length_beam=cfg.length_beam, **cfg.schedule.options()))
    model, tok = load_cmlm(cfg.out_dir)
    dev = read_tsv(DEV_TSV)[: cfg.dev_sentences]
    scores = {}
    for T in cfg.eval_iterations:
        states = mask_predict(model, tok, [en for en, _ in dev], iterations=T, length_beam=cfg.length_beam)
        scores[f"dev_bleu_T{T}"] = round(bleu([s.output for s in states], [de for _, de in dev]), 2)
    result = {"steps": trained["steps"], "seconds": trained["seconds"], "final_loss": trained["losses"][-1]["loss"],
              **scores, "out_dir": str(cfg.out_dir)}
    (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


@flow(name="train-cmlm", persist_result=False)
def train_cmlm(cfg: CMLMTrainConfig = CMLMTrainConfig()) -> dict:
    return train_cmlm_task.submit(cfg).result()


# -- English MLM -----------------------------------------------------------------


class MLMTrainConfig(BaseModel):
    out_dir: Path = Path("build/mlm-en")
    n_sentences: int = 30_000
    vocab_size: int = 1000
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    max_positions: int = 64
    mask_prob: float = 0.15
    schedule: Schedule = Schedule(max_steps=1500)
    dev_sentences: int = 200


def train_wordpiece(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece()
    core.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


@task(name="train-mlm", persist_result=False)
def train_mlm_task(cfg: MLMTrainConfig) -> dict:
    """A WordPiece vocabulary and a BERT config for the grammar's English -> `cascade train mlm`'s recipe."""
    from transformers import BertConfig

    from stages.training.masked_lm_recipes import MLMOptions, run_mlm

    torch.set_num_threads(cfg.schedule.threads)
    texts = [en for en, _ in generate("train", cfg.n_sentences, seed=cfg.schedule.seed)]
    tok = train_wordpiece(texts, cfg.vocab_size)
    start = cfg.out_dir.parent / f"{cfg.out_dir.name}-init"  # config + tokenizer: the recipe starts from scratch
    start.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=len(tok), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
               num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden,
               max_position_embeddings=cfg.max_positions, pad_token_id=tok.pad_token_id).save_pretrained(start)
    tok.save_pretrained(start)
    data = start / "train.txt"
    data.write_text("\n".join(texts) + "\n", encoding="utf-8")
    dev = start / "dev.txt"
    dev.write_text("\n".join(en for en, _ in read_tsv(DEV_TSV)[: cfg.dev_sentences]) + "\n", encoding="utf-8")
    trained = run_mlm(MLMOptions(data=data, dev=dev, dev_size=cfg.dev_sentences, model=str(start), out=cfg.out_dir,
                                 mask_prob=cfg.mask_prob, max_length=cfg.max_positions, **cfg.schedule.options()))
    result = {"steps": trained["steps"], "seconds": trained["seconds"], "final_loss": trained["losses"][-1]["loss"],
              "dev_masked_accuracy": trained["evals"][-1]["dev_masked_accuracy"], "out_dir": str(cfg.out_dir)}
    (cfg.out_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


@flow(name="train-mlm", persist_result=False)
def train_mlm(cfg: MLMTrainConfig = MLMTrainConfig()) -> dict:
    return train_mlm_task.submit(cfg).result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["cmlm", "mlm"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=1e9)
    ap.add_argument("--pairs", type=int, default=None, help="training pairs (cmlm) or sentences (mlm)")
    ap.add_argument("--dev", type=int, default=200, help="dev sentences to evaluate on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--distill-from", default=None, help="cmlm: train on this AR model's translations")
    args = ap.parse_args()
    if args.what == "cmlm":
        cfg = CMLMTrainConfig(dev_sentences=args.dev)
        size = {"n_pairs": args.pairs} if args.pairs else {}
        distill = {"distill_from": Path(args.distill_from)} if args.distill_from else {}
    else:
        cfg = MLMTrainConfig(dev_sentences=args.dev)
        size = {"n_sentences": args.pairs} if args.pairs else {}
        distill = {}
    schedule = cfg.schedule.model_copy(update={"max_minutes": args.max_minutes, "threads": args.threads,
                                               **({"max_steps": args.max_steps} if args.max_steps else {})})
    cfg = cfg.model_copy(update={"schedule": schedule, **size, **distill,
                                 **({"out_dir": Path(args.out)} if args.out else {})})
    result = (train_cmlm if args.what == "cmlm" else train_mlm)(cfg)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
