"""Train a tiny GPT-2-style English LM (with its own BPE tokenizer) on the demo grammar's English side.

Trained by the training layer's loop (stages/training/train_loop.py) and saved
with `save_pretrained` (fp16 weights, fp32 by default when loaded), so `AutoTokenizer.from_pretrained(dir)` and
`AutoModelForCausalLM.from_pretrained(dir)` load it offline. Every sequence is
`<|endoftext|> sentence <|endoftext|>`, so the LM scores a whole sentence.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from pydantic import BaseModel

from demo.demo_grammar import generate, read_tsv
from stages.training.mt_recipe import hf_saver
from stages.training.train_loop import LoopConfig, Trainee, fit

EOT = "<|endoftext|>"


class LMTrainConfig(BaseModel):
    out_dir: Path = Path("assets/models/lm-en")
    n_sentences: int = 30_000
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 4
    vocab_size: int = 800
    n_positions: int = 64
    max_steps: int = 600
    max_minutes: float = 1e9
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    threads: int = 2


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=EOT))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT]))
    eot = tok.token_to_id(EOT)
    tok.post_processor = processors.TemplateProcessing(single=f"{EOT} $A {EOT}", special_tokens=[(EOT, eot)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   pad_token=EOT, model_max_length=64)


@torch.no_grad()
def perplexity(model, tokenizer, sentences: list[str]) -> float:
    model.eval()
    enc = tokenizer(sentences, return_tensors="pt", padding=True)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    return math.exp(model(**enc, labels=labels).loss.item())


def train_lm(cfg: LMTrainConfig = LMTrainConfig()) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    texts = [en for en, _ in generate("train", cfg.n_sentences, seed=cfg.seed)]
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to("cuda" if torch.cuda.is_available() else "cpu")

    def loss(m, batch: list[str], step: int) -> torch.Tensor:
        enc = tokenizer(batch, return_tensors="pt", padding=True).to(m.device)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        return m(**enc, labels=labels).loss

    def report(step: int, steps: int, value: float) -> None:
        if step % 100 == 0:
            print(f"lm step {step} loss {value:.3f}", flush=True)

    loop = LoopConfig(steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=50, min_lr_ratio=0.0,
                      max_minutes=cfg.max_minutes if cfg.max_minutes < 1e9 else None, seed=cfg.seed,
                      threads=cfg.threads, resume=False)
    trained = fit(Trainee(model, loss, save=hf_saver(tokenizer, "float16")), texts, loop, cfg.out_dir,
                  on_step=report)
    dev = [en for en, _ in read_tsv(Path(__file__).resolve().parents[1] / "assets/demo/corpus/dev.tsv")[:200]]
    ppl = perplexity(model.cpu(), tokenizer, dev)
    result = {"steps": trained.steps, "seconds": trained.seconds, "dev_perplexity": ppl, "out_dir": str(cfg.out_dir)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", default="assets/models/lm-en")
    parser.add_argument("--max-steps", type=int, default=600)
    args = parser.parse_args()
    train_lm(LMTrainConfig(out_dir=Path(args.out_dir), max_steps=args.max_steps))


if __name__ == "__main__":
    main()
