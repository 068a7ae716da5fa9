"""Tiny random checkpoints for tests and benchmarks: real formats, real loading code, seconds to make.

Marian MT, GPT-2, a BERT masked LM, a CMLM and whisper. The HF models are saved beside their
tokenizer (`save_pretrained`), so they load exactly as real ones do. Ensemble members use the
*_MEMBER settings: sharper outputs (larger init) that end early (an EOS bias), long inputs allowed.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from stages.testing.tiny_tokenizers import mlm_word_tokenizer, word_tokenizer

MARIAN_MEMBER = {"max_positions": 256, "init_std": 0.2, "eos_bias": 2.0, "max_length": None}
GPT2_MEMBER = {"max_positions": 256, "init_std": 0.2, "eos_bias": 3.0}


def tiny_marian(tokenizer=None, *, seed: int = 0, d_model: int = 32, layers: int = 1, heads: int = 2,
                ffn: int = 64, max_positions: int = 64, init_std: float = 0.02, eos_bias: float = 0.0,
                max_length: int | None = 24, **config):
    """A random MarianMTModel over `tokenizer` (default: the word-level MT one); ids come from the tokenizer.

    `max_length` sets a greedy generation config (None keeps the one HF derives); `config` overrides MarianConfig.
    """
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    tok = tokenizer or word_tokenizer()
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
           "decoder_start_token_id": tok.pad_token_id, "forced_eos_token_id": tok.eos_token_id}
    model = MarianMTModel(MarianConfig(
        vocab_size=len(tok), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        max_position_embeddings=max_positions, init_std=init_std, scale_embedding=True, **ids, **config)).eval()
    if eos_bias:
        with torch.no_grad():
            model.final_logits_bias[0, tok.eos_token_id] = eos_bias
    if max_length is not None:
        model.generation_config = GenerationConfig(**ids, max_length=max_length, num_beams=1)
    return model


def tiny_gpt2(tokenizer=None, *, seed: int = 0, d_model: int = 32, layers: int = 1, heads: int = 2,
              max_positions: int = 64, init_std: float = 0.02, eos_bias: float | None = None):
    """A random GPT-2 over `tokenizer` (default: MT words, EOS <|endoftext|>, none appended).

    With `eos_bias` the head is untied and a constant unit in the final norm gives EOS that logit bias.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = tokenizer or word_tokenizer(eos="<|endoftext|>", add_eos=False)
    eos = tok.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_positions=max_positions, n_embd=d_model, n_layer=layers, n_head=heads,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=tok.pad_token_id, initializer_range=init_std,
        tie_word_embeddings=eos_bias is None)).eval()
    if eos_bias is not None:
        with torch.no_grad():
            model.transformer.ln_f.weight[0] = 0.0
            model.transformer.ln_f.bias[0] = 1.0
            model.lm_head.weight[:, 0] = 0.0
            model.lm_head.weight[eos, 0] = eos_bias
    return model


def save_marian(path: str | Path, tokenizer=None, **options) -> Path:
    tokenizer = tokenizer or word_tokenizer()
    return save_pretrained(path, tiny_marian(tokenizer, **options), tokenizer)


def save_gpt2(path: str | Path, tokenizer=None, **options) -> Path:
    tokenizer = tokenizer or word_tokenizer(eos="<|endoftext|>", add_eos=False)
    return save_pretrained(path, tiny_gpt2(tokenizer, **options), tokenizer)


def save_bert_mlm(path: str | Path, seed: int = 0, hidden: int = 32) -> Path:
    """A random BertForMaskedLM with the word-level MLM tokenizer (AutoModelForMaskedLM loads it)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    tok = mlm_word_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, pad_token_id=0)
    return save_pretrained(path, BertForMaskedLM(config).eval(), tok)


def tiny_cmlm(tokenizer, seed: int = 0, d_model: int = 32, layers: int = 1, heads: int = 2, ffn: int = 64,
              max_target_length: int = 24, max_source_positions: int = 64):
    from stages.methods.refinement.cmlm import CMLM, CMLMConfig

    torch.manual_seed(seed)
    config = CMLMConfig(vocab_size=len(tokenizer), d_model=d_model, layers=layers, heads=heads, ffn=ffn,
                        dropout=0.0, max_source_positions=max_source_positions,
                        max_target_length=max_target_length, pad_token_id=tokenizer.pad_token_id)
    return CMLM(config).eval()


def save_pretrained(path: str | Path, model, tokenizer) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_whisper(path: Path, seed: int = 0, n_audio_ctx: int = 200, n_vocab: int = 51864,
                 sharpen: float = 3.0) -> Path:
    """A random whisper checkpoint with a short audio context (n_audio_ctx=200 -> 4 s windows).

    n_vocab 51864 is English-only, 51865 multilingual. `sharpen` scales every weight: sharper logits give
    fewer near-ties and varied (not degenerate) random outputs.
    """
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=n_audio_ctx, n_audio_state=64, n_audio_head=2,
                           n_audio_layer=1, n_vocab=n_vocab, n_text_ctx=32, n_text_state=64, n_text_head=2,
                           n_text_layer=1)
    model = Whisper(dims)
    with torch.no_grad():
        # whisper leaves the decoder's position table as torch.empty (checkpoints overwrite it): whatever
        # was in memory, inf and NaN included, made the random model differ from run to run
        model.decoder.positional_embedding.normal_(0, 0.02)
        if sharpen != 1.0:
            for p in model.parameters():
                p.mul_(sharpen)
    state = {k: v.half() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": state}, path)
    return path
