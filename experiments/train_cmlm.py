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
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Callable

import torch
from pydantic import BaseModel

from prefect import flow, task
from demo.demo_grammar import generate, read_tsv
from demo.train_demo_mt import warmup_cosine

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


def run_training(model: torch.nn.Module, loss_of_batch: Callable[[random.Random], torch.Tensor], s: Schedule,
                 name: str) -> dict:
    """AdamW, linear warmup then cosine decay over steps or minutes (whichever ends first)."""
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.98), weight_decay=0.01)
    t0 = time.time()

    def progress(step: int) -> float:
        return min(1.0, max(step / s.max_steps, (time.time() - t0) / (60 * s.max_minutes)))

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, progress(step), s.warmup))
    model.train()
    step, loss = 0, torch.tensor(float("nan"))
    while progress(step) < 1.0:
        loss = loss_of_batch(rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 25 == 0:
            print(f"{name} step {step}/{s.max_steps} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    return {"steps": step, "seconds": round(time.time() - t0, 1), "final_loss": round(loss.item(), 4)}


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


def cmlm_batch(tok, pairs: list[tuple[str, str]], max_len: int, mask_id: int, rng: random.Random):
    """(source ids, masked target ids, labels with -100 where not masked, target lengths)."""
    src = tok([s for s, _ in pairs], return_tensors="pt", padding=True, truncation=True, max_length=64)["input_ids"]
    targets = [tok(t, add_special_tokens=False)["input_ids"][:max_len] or [tok.unk_token_id] for _, t in pairs]
    width = max(len(t) for t in targets)
    inputs = torch.full((len(pairs), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for i, t in enumerate(targets):
        n = len(t)
        masked = rng.sample(range(n), rng.randint(1, n))  # k ~ Uniform{1…N}
        row = torch.tensor(t)
        inputs[i, :n] = row
        inputs[i, masked] = mask_id
        labels[i, masked] = row[masked]
    return src, inputs, labels, torch.tensor([len(t) for t in targets])


@task(name="train-cmlm", persist_result=False)
def train_cmlm_task(cfg: CMLMTrainConfig) -> dict:
    from transformers import AutoTokenizer

    from demo.train_demo_mt import bleu
    from stages.methods.refinement.cmlm import CMLM, CMLMConfig, save_cmlm
    from stages.methods.refinement.mask_predict_steps import mask_predict

    torch.set_num_threads(cfg.schedule.threads)
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer_from)
    pairs = generate("train", cfg.n_pairs, seed=cfg.data_seed)
    if cfg.distill_from is not None:
        from transformers import AutoModelForSeq2SeqLM

        from demo.train_demo_mt import translate

        teacher = AutoModelForSeq2SeqLM.from_pretrained(cfg.distill_from)
        pairs = list(zip([s for s, _ in pairs], translate(teacher, tok, [s for s, _ in pairs])))
    torch.manual_seed(cfg.schedule.seed)
    model = CMLM(CMLMConfig(vocab_size=len(tok), d_model=cfg.d_model, layers=cfg.layers, heads=cfg.heads,
                            ffn=cfg.ffn, max_target_length=cfg.max_target_length, pad_token_id=tok.pad_token_id))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    mask_id = model.config.mask_token_id

    def loss_of_batch(rng: random.Random) -> torch.Tensor:
        src, inp, labels, lengths = (t.to(device) for t in cmlm_batch(
            tok, rng.sample(pairs, cfg.schedule.batch_size), cfg.max_target_length, mask_id, rng))
        logits, length_logits = model(src, inp)
        token_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                       ignore_index=-100, label_smoothing=cfg.label_smoothing)
        length_loss = torch.nn.functional.cross_entropy(length_logits, lengths)
        return token_loss + cfg.length_loss_weight * length_loss

    result = run_training(model, loss_of_batch, cfg.schedule, "cmlm")
    model.cpu()
    save_cmlm(model, tok, cfg.out_dir)
    dev = read_tsv(DEV_TSV)[: cfg.dev_sentences]
    scores = {}
    for T in cfg.eval_iterations:
        states = mask_predict(model, tok, [en for en, _ in dev], iterations=T, length_beam=cfg.length_beam)
        scores[f"dev_bleu_T{T}"] = round(bleu([s.output for s in states], [de for _, de in dev]), 2)
    result = {**result, **scores, "out_dir": str(cfg.out_dir)}
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


def mlm_batch(tok, texts: list[str], mask_prob: float, rng: random.Random):
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True)
    ids = enc["input_ids"]
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    chosen = (torch.rand(ids.shape, generator=g) < mask_prob) & ~special
    labels = torch.where(chosen, ids, -100)
    roll = torch.rand(ids.shape, generator=g)
    ids = torch.where(chosen & (roll < 0.8), tok.mask_token_id, ids)
    random_ids = torch.randint(len(tok.all_special_ids), len(tok), ids.shape, generator=g)
    ids = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
    return ids, enc["attention_mask"], labels


@task(name="train-mlm", persist_result=False)
def train_mlm_task(cfg: MLMTrainConfig) -> dict:
    from transformers import BertConfig, BertForMaskedLM

    from demo.train_demo_mt import mark_float32

    torch.set_num_threads(cfg.schedule.threads)
    texts = [en for en, _ in generate("train", cfg.n_sentences, seed=cfg.schedule.seed)]
    tok = train_wordpiece(texts, cfg.vocab_size)
    torch.manual_seed(cfg.schedule.seed)
    model = BertForMaskedLM(BertConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        intermediate_size=4 * cfg.hidden, max_position_embeddings=cfg.max_positions, pad_token_id=tok.pad_token_id))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    def loss_of_batch(rng: random.Random) -> torch.Tensor:
        ids, attn, labels = (t.to(device) for t in mlm_batch(tok, rng.sample(texts, cfg.schedule.batch_size),
                                                              cfg.mask_prob, rng))
        return model(input_ids=ids, attention_mask=attn, labels=labels).loss

    result = run_training(model, loss_of_batch, cfg.schedule, "mlm")
    dev = [en for en, _ in read_tsv(DEV_TSV)[: cfg.dev_sentences]]
    ids, attn, labels = mlm_batch(tok, dev, cfg.mask_prob, random.Random(123))
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.cpu()
    keep = labels != -100
    accuracy = float((logits.argmax(-1)[keep] == labels[keep]).float().mean())
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    model.cpu().to(torch.float16).save_pretrained(cfg.out_dir)
    tok.save_pretrained(cfg.out_dir)
    mark_float32(cfg.out_dir)
    result = {**result, "dev_masked_accuracy": round(accuracy, 4), "out_dir": str(cfg.out_dir)}
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
