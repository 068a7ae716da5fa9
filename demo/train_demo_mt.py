"""Train a tiny Marian-architecture EN->DE model on the demo grammar.

The tokenizer is trained here too (a small shared BPE with the `tokenizers`
library), so the saved folder loads offline with
`AutoTokenizer.from_pretrained(dir)` and `AutoModelForSeq2SeqLM.from_pretrained(dir)`.

`train_mt` is meant to be reused: size, number of pairs, seed, epochs/steps,
data subset (style or explicit pairs), an initial model to fine-tune, and
periodic checkpoints are all parameters. The loop itself is the training
layer's (stages/training/train_loop.py), the one `cascade train mt` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import BaseModel

from demo.demo_grammar import generate, read_tsv
from stages.training.mt_recipe import bleu_hook, cross_entropy_loss, hf_saver
from stages.training.train_data import Pair, seq2seq_batch
from stages.training.train_loop import LoopConfig, Trainee, fit

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
LOAD_LOCK = threading.RLock()


class MTSize(BaseModel):
    d_model: int = 160
    layers: int = 3
    heads: int = 4
    ffn: int = 640
    vocab_size: int = 1200
    max_positions: int = 64


class MTTrainConfig(BaseModel):
    out_dir: Path = Path("assets/models/mt-en-de")
    size: MTSize = MTSize()
    n_pairs: int = 40_000
    style: Literal["any", "statement", "question"] = "any"
    seed: int = 0
    data_seed: int = 0
    epochs: float = 2.0
    max_steps: int | None = None
    max_minutes: float = 1e9
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup: int = 300
    label_smoothing: float = 0.1
    init_from: Path | None = None  # fine-tune this model (and keep its tokenizer)
    save_every: int | None = None  # also write checkpoint-STEP folders
    threads: int = 2
    dev_sentences: int = 200


def train_tokenizer(texts: list[str], vocab_size: int):
    """A shared EN+DE BPE; Marian appends </s> to every sequence, so does the post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], min_frequency=2)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=128)


def build_model(tokenizer, size: MTSize):
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    config = MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=size.d_model,
        encoder_layers=size.layers, decoder_layers=size.layers,
        encoder_attention_heads=size.heads, decoder_attention_heads=size.heads,
        encoder_ffn_dim=size.ffn, decoder_ffn_dim=size.ffn, max_position_embeddings=size.max_positions,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id,
        dropout=0.1, attention_dropout=0.0, activation_function="gelu", scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(
        num_beams=4, max_length=size.max_positions, early_stopping=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id)
    return model


def save(model, tokenizer, out_dir: Path) -> None:
    """fp16 weights on disk; config dtype float32 so a default load runs in fp32 on CPU."""
    hf_saver(tokenizer, "float16")(model, Path(out_dir))


def mark_float32(out_dir: Path) -> None:
    path = Path(out_dir) / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = "float32"
    path.write_text(json.dumps(config, indent=2) + "\n")


def train_mt(cfg: MTTrainConfig = MTTrainConfig(), pairs: list[tuple[str, str]] | None = None,
             loss_fn: Callable | None = None) -> dict:
    """Train (or fine-tune) with the training layer's loop and save to `cfg.out_dir`; returns dev BLEU and timings.

    `loss_fn(model, batch, tokenizer)` replaces the cross-entropy on the gold labels (e.g. a
    distillation loss); `batch` holds input_ids, attention_mask and labels (padding = -100).
    """
    with LOAD_LOCK:  # transformers resolves names lazily, and two threads doing it at once can fail
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    if pairs is None:
        pairs = generate("train", cfg.n_pairs, seed=cfg.data_seed, style=cfg.style)
    pairs = [Pair(*p) for p in pairs]
    dev = [Pair(*p) for p in read_tsv(Path(__file__).resolve().parents[1] / "assets/demo/corpus/dev.tsv")
           [: cfg.dev_sentences]]

    if cfg.init_from is not None:
        with LOAD_LOCK:  # from_pretrained is not thread-safe (training flows run members in threads)
            tokenizer = AutoTokenizer.from_pretrained(cfg.init_from)
            model = AutoModelForSeq2SeqLM.from_pretrained(cfg.init_from, dtype=torch.float32)
    else:
        tokenizer = train_tokenizer([t for p in pairs for t in p], cfg.size.vocab_size)
        model = build_model(tokenizer, cfg.size)
    model.to("cuda" if torch.cuda.is_available() else "cpu")

    total = cfg.max_steps or int(cfg.epochs * math.ceil(len(pairs) / cfg.batch_size))
    loop = LoopConfig(steps=total, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup, seed=cfg.seed,
                      save_every=cfg.save_every, max_minutes=cfg.max_minutes if cfg.max_minutes < 1e9 else None,
                      threads=cfg.threads, resume=False)
    if loss_fn is None:
        loss = cross_entropy_loss(tokenizer, 128, cfg.label_smoothing)
    else:
        def loss(m, batch, step):
            return loss_fn(m, seq2seq_batch(tokenizer, batch, 128, m.device), tokenizer)
    t0 = time.time()

    def report(step: int, steps: int, value: float) -> None:
        if step % 25 == 0:
            print(f"mt step {step}/{steps} loss {value:.3f} {time.time() - t0:.0f}s", flush=True)

    trainee = Trainee(model, loss, save=hf_saver(tokenizer, "float16"), evaluate=bleu_hook(tokenizer, dev))
    trained = fit(trainee, pairs, loop, cfg.out_dir, on_step=report)
    score = trained.evals[-1]["dev_bleu"]
    result = {"steps": trained.steps, "seconds": trained.seconds, "dev_bleu": score, "out_dir": str(cfg.out_dir)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", default="assets/models/mt-en-de")
    parser.add_argument("--n-pairs", type=int, default=40_000)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=1e9)
    parser.add_argument("--style", default="any", choices=["any", "statement", "question"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", default=None)
    parser.add_argument("--save-every", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2, help="1 is faster on an oversubscribed CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    cfg = MTTrainConfig(out_dir=Path(args.out_dir), n_pairs=args.n_pairs, epochs=args.epochs,
                        max_steps=args.max_steps, max_minutes=args.max_minutes, style=args.style, seed=args.seed,
                        init_from=Path(args.init_from) if args.init_from else None, save_every=args.save_every,
                        threads=args.threads, batch_size=args.batch_size)
    train_mt(cfg)


if __name__ == "__main__":
    main()
