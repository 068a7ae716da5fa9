"""Tiny random members for tests and benchmarks (no downloads).

A toy corpus trains small `tokenizers` BPE vocabularies (sentencepiece-like
Metaspace or GPT-2-like byte level); random Marian / GPT-2 models of any size
are saved next to their tokenizer with `save_pretrained`, so a member is
loaded exactly as a real one would be (`load_member(dir)`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, MarianConfig, MarianMTModel, PreTrainedTokenizerFast

WORDS = ("the a cat dog sat ran on in under park mat house green small big red blue old new man woman child "
         "saw sees likes eats walks tree car road river book reads writes quickly slowly today yesterday and "
         "with from to over near far bird fish sings swims").split()


def toy_corpus(n_sentences: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n_sentences)]


def pseudo_word_corpus(n_words: int = 3000, n_sentences: int = 3000, seed: int = 0) -> list[str]:
    """Sentences of random syllable words: enough distinct text for a BPE vocabulary of a few thousand."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["an", "er", "in", "or", "us"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n_words)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(n_sentences)]


def build_tokenizer(kind: Literal["metaspace", "byte_level"] = "metaspace", vocab_size: int = 120,
                    seq2seq: bool = True, seed: int = 0, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Metaspace: <pad>=0 </s>=1 <unk>=2, EOS appended (Marian-like). Byte level: <|endoftext|>=0 is BOS/EOS/pad."""
    corpus = corpus or toy_corpus(seed=seed)
    if kind == "metaspace":
        specials = ["<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
        if seq2seq:
            tok.post_processor = processors.TemplateProcessing(
                single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    specials = ["<|endoftext|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[0],
                                   pad_token=specials[0], padding_side="left")


def save_tiny_marian(path: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, d_model: int = 32,
                     layers: int = 1, ffn: int = 64, heads: int = 2, eos_bias: float = 2.0,
                     init_std: float = 0.2) -> Path:
    """Random Marian; `eos_bias` on the output bias makes EOS likely enough to end outputs early."""
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=256, init_std=init_std,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1, bos_token_id=None,
        scale_embedding=True, share_encoder_decoder_embeddings=True,
    )
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, 1] = eos_bias
    return _save(path, model, tokenizer)


def save_tiny_gpt2(path: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, d_model: int = 32,
                   layers: int = 1, heads: int = 2, eos_bias: float = 3.0, init_std: float = 0.2) -> Path:
    """Random GPT-2 with an untied head; a constant unit in the final norm gives EOS a logit bias."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=d_model, n_layer=layers, n_head=heads, n_positions=256,
                        bos_token_id=0, eos_token_id=0, initializer_range=init_std, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[0, 0] = eos_bias
    return _save(path, model, tokenizer)


def _save(path: str | Path, model, tokenizer) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
