"""Tiny tokenizers for tests and benchmarks (no downloads): word-level vocabularies and trained BPE.

Every tokenizer is a `PreTrainedTokenizerFast`, saved and loaded the way a real one is.
"""
from __future__ import annotations

import random
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# English and German words the word-level MT tokenizer knows.
MT_WORDS = ("the a cat dog sees runs house small big red green one two three is are and not who what where "
            "der die das katze hund sieht läuft haus klein groß rot grün eins zwei drei ist sind und nicht "
            "wer was wo . , ?").split()
MLM_WORDS = ("the a cat dog sees runs house small big red green one two three is are and not who what where "
             "man woman child book reads car . , ?").split()
# Words of the toy corpus that BPE vocabularies are trained on.
CORPUS_WORDS = ("the a cat dog sat ran on in under park mat house green small big red blue old new man woman child "
                "saw sees likes eats walks tree car road river book reads writes quickly slowly today yesterday and "
                "with from to over near far bird fish sings swims").split()


def word_level_tokenizer(vocab: list[str], *, template: str | None = None, decoder=None,
                         **roles: str) -> PreTrainedTokenizerFast:
    """Whitespace-split words, ids in `vocab` order; `roles` like pad_token="<pad>" (unk_token is required).

    `template` is the post-processing of one text, e.g. "$A </s>" or "[CLS] $A [SEP]".
    """
    ids = {tok: i for i, tok in enumerate(vocab)}
    core = Tokenizer(models.WordLevel(ids, unk_token=roles["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if decoder is not None:
        core.decoder = decoder
    if template:
        specials = [(tok, ids[tok]) for tok in template.split() if tok != "$A"]
        core.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, **roles)


def word_tokenizer(eos: str = "</s>", add_eos: bool = True) -> PreTrainedTokenizerFast:
    """MT words: <pad>=0, EOS=1, <unk>=2; EOS appended to every text when `add_eos` (Marian-like)."""
    return word_level_tokenizer(["<pad>", eos, "<unk>", *MT_WORDS], template=f"$A {eos}" if add_eos else None,
                                pad_token="<pad>", eos_token=eos, unk_token="<unk>")


def mlm_word_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """BERT's special tokens first, then the words: [CLS] text [SEP]."""
    return word_level_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(words or MLM_WORDS)],
                                template="[CLS] $A [SEP]", decoder=decoders.WordPiece(prefix="##"),
                                pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                mask_token="[MASK]")


def numbered_word_tokenizer(vocab_size: int = 64) -> PreTrainedTokenizerFast:
    """<pad> <s> </s> <unk>, then words w0 w1 ... (x0 x1 ... past 64): exactly `vocab_size` tokens."""
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(60)]
    words = (words + [f"x{i}" for i in range(max(0, vocab_size - len(words)))])[:vocab_size]
    return word_level_tokenizer(words, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def toy_corpus(n_sentences: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(CORPUS_WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n_sentences)]


def pseudo_word_corpus(n_words: int = 3000, n_sentences: int = 3000, seed: int = 0) -> list[str]:
    """Sentences of random syllable words: enough distinct text for a BPE vocabulary of a few thousand."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["an", "er", "in", "or", "us"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n_words)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(n_sentences)]


def bpe_tokenizer(kind: Literal["metaspace", "byte_level"] = "metaspace", vocab_size: int = 120,
                  seq2seq: bool = True, seed: int = 0, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """BPE trained on `corpus` (default: the toy corpus).

    metaspace (sentencepiece-like): <pad>=0 </s>=1 <unk>=2, EOS appended when `seq2seq` (Marian-like).
    byte_level (GPT-2-like): <|endoftext|>=0 is BOS, EOS and pad; pads on the left.
    """
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
