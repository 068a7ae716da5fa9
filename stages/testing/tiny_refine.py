"""Tiny random models for refinement tests and benchmarks: a word-level BERT masked LM and a CMLM."""
from __future__ import annotations

from pathlib import Path

import torch

from stages.methods.refinement.cmlm import CMLM, CMLMConfig

MLM_WORDS = ("the a cat dog sees runs house small big red green one two three is are and not who what where "
             "man woman child book reads car . , ?").split()
MLM_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def word_mlm_tokenizer(words: list[str] | None = None):
    """A whitespace word-level tokenizer with BERT's special tokens: [CLS] text [SEP]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(MLM_SPECIALS + list(words or MLM_WORDS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def save_tiny_bert_mlm(path: str | Path, seed: int = 0, hidden: int = 32) -> Path:
    """A random BertForMaskedLM saved with its tokenizer (loads with AutoModelForMaskedLM / AutoTokenizer)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    tok = word_mlm_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, pad_token_id=0)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    BertForMaskedLM(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_cmlm(tokenizer, seed: int = 0, d_model: int = 32, layers: int = 1, heads: int = 2, ffn: int = 64,
              max_target_length: int = 24, max_source_positions: int = 64) -> CMLM:
    torch.manual_seed(seed)
    config = CMLMConfig(vocab_size=len(tokenizer), d_model=d_model, layers=layers, heads=heads, ffn=ffn,
                        dropout=0.0, max_source_positions=max_source_positions,
                        max_target_length=max_target_length, pad_token_id=tokenizer.pad_token_id)
    return CMLM(config).eval()
