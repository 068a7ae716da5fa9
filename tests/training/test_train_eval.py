"""The tree's one WER normaliser, BLEU and batched translation (stages/training/train_eval.py)."""
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from stages.testing.tiny_tokenizers import bpe_tokenizer
from tests.training.training_fixtures import save_tiny_marian
from stages.training.train_eval import bleu, normalize_transcript, translate, wer


def test_normaliser_keeps_contractions_one_word():
    assert normalize_transcript("  Don't STOP,  now!") == "dont stop now"


def test_wer_and_bleu_by_hand():
    # one substitution in three words, one deletion in two: (1 + 1) / 5 reference words
    assert wer(["the cat sit", "a"], ["The cat sat.", "a dog"]) == pytest.approx(40.0)
    assert wer(["x"], [""]) != wer(["x"], [""])  # only empty references: NaN, not 0
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_translate_equals_generate_in_batches(tmp_path):
    save_tiny_marian(tmp_path, bpe_tokenizer(), seed=1)
    model, tok = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    sources = ["the cat sat", "a dog ran in the park", "old man"]
    with torch.no_grad():
        reference = [tok.decode(model.generate(**tok([s], return_tensors="pt"), num_beams=2, max_new_tokens=8)[0],
                                skip_special_tokens=True) for s in sources]
    assert translate(model, tok, sources, batch_size=2, num_beams=2, max_new_tokens=8) == reference
