"""Tiny random checkpoints built in tests: real formats, real loading code, seconds to make."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

WORDS = ("the a cat dog sees runs house small big red green one two three is are and not who what where "
         "der die das katze hund sieht läuft haus klein groß rot grün eins zwei drei ist sind und nicht "
         "wer was wo . , ?").split()


def word_tokenizer(eos: str = "</s>", add_eos: bool = True):
    """A word-level fast tokenizer saved the way AutoTokenizer loads it from a dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<pad>", eos, "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_eos:
        core.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token=eos, unk_token="<unk>")


def make_marian(path: Path, seed: int = 0, d_model: int = 32, layers: int = 1) -> Path:
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    tok = word_tokenizer()
    config = MarianConfig(vocab_size=len(tok), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                          decoder_start_token_id=0, forced_eos_token_id=1, scale_embedding=True)
    model = MarianMTModel(config).eval()
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                                               forced_eos_token_id=1, max_length=24, num_beams=1)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_gpt2(path: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = word_tokenizer(eos="<|endoftext|>", add_eos=False)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_whisper(path: Path, seed: int = 0, n_audio_ctx: int = 200) -> Path:
    """A random whisper checkpoint with a short audio context (n_audio_ctx=200 -> 4 s windows)."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=n_audio_ctx, n_audio_state=64, n_audio_head=2,
                           n_audio_layer=1, n_vocab=51864, n_text_ctx=32, n_text_state=64, n_text_head=2,
                           n_text_layer=1)
    model = Whisper(dims)
    with torch.no_grad():
        # whisper leaves the decoder's position table as torch.empty (checkpoints overwrite it): whatever
        # was in memory, inf and NaN included, made the random model differ from run to run
        model.decoder.positional_embedding.normal_(0, 0.02)
        # sharper logits: fewer near-ties, varied (not degenerate) random outputs
        for p in model.parameters():
            p.mul_(3.0)
    state = {k: v.half() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": state}, path)
    return path
