"""Train a tiny GPT-2-style English LM (with its own BPE tokenizer) on the demo grammar's English side.

Saved with `save_pretrained`, so `AutoTokenizer.from_pretrained(dir)` and
`AutoModelForCausalLM.from_pretrained(dir)` load it offline. Every sequence is
`<|endoftext|> sentence <|endoftext|>`, so the LM scores a whole sentence.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from pydantic import BaseModel

from demo.demo_grammar import generate, read_tsv
from demo.train_demo_mt import mark_float32

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

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    texts = [en for en, _ in generate("train", cfg.n_sentences, seed=cfg.seed)]
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    t0 = time.time()

    def progress(s: int) -> float:
        return min(1.0, max(s / cfg.max_steps, (time.time() - t0) / (60 * cfg.max_minutes)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 50, 0.5 * (1 + math.cos(math.pi * progress(s)))))
    step = 0
    model.train()
    while progress(step) < 1.0:
        batch = tokenizer(rng.sample(texts, cfg.batch_size), return_tensors="pt", padding=True).to(device)
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        loss = model(**batch, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % 100 == 0:
            print(f"lm step {step} loss {loss.item():.3f}", flush=True)
    dev = [en for en, _ in read_tsv(Path(__file__).resolve().parents[1] / "assets/demo/corpus/dev.tsv")[:200]]
    ppl = perplexity(model.cpu(), tokenizer, dev)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(cfg.out_dir)
    tokenizer.save_pretrained(cfg.out_dir)
    mark_float32(cfg.out_dir)  # fp16 on disk, fp32 by default when loaded
    result = {"steps": step, "seconds": time.time() - t0, "dev_perplexity": ppl, "out_dir": str(cfg.out_dir)}
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
