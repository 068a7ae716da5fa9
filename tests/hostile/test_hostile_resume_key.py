"""Issue 15, item 21: the resume key sees every change that changes outputs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages.asr import WhisperASR
from stages.translate import Translate


def same_size_same_second(a: Path, b: Path) -> None:
    st = a.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert a.stat().st_size == b.stat().st_size and int(a.stat().st_mtime) == int(b.stat().st_mtime)


def test_a_checkpoint_rewritten_with_the_same_size_and_second_changes_the_key(tmp_path):
    ckpt = tmp_path / "asr.pt"
    ckpt.write_bytes(b"A" * 4096)
    before = WhisperASR(model=str(ckpt)).fingerprint()
    saved = ckpt.stat()
    ckpt.write_bytes(b"B" * 4096)  # same size; mtime forced back to the same instant
    os.utime(ckpt, ns=(saved.st_atime_ns, saved.st_mtime_ns))
    assert WhisperASR(model=str(ckpt)).fingerprint() != before


def test_a_model_folder_is_identified_by_content_not_by_names_and_sizes(tiny_marian, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_marian, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of one weight
    saved = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(saved.st_atime_ns, saved.st_mtime_ns))
    original = Translate(model=str(copy)).fingerprint()
    shutil.copy2(Path(tiny_marian) / "model.safetensors", weights)  # the original bytes, same size
    same_size_same_second(Path(tiny_marian) / "model.safetensors", weights)
    assert Translate(model=str(copy)).fingerprint() != original


def test_files_over_the_hash_limit_fall_back_to_size_time_and_header(tmp_path, monkeypatch):
    from stages.runtime.model_cache import model_file_digest

    monkeypatch.setenv("CASCADE_MODEL_HASH_MAX_BYTES", "10")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    assert model_file_digest(big).startswith("size=100,")


def test_a_stage_version_bump_changes_the_key(tiny_marian):
    class TranslateV2(Translate):
        version = 2

    class TranslateV1(Translate):
        pass

    v1, v2 = TranslateV1(model=str(tiny_marian)), TranslateV2(model=str(tiny_marian))
    TranslateV2.__qualname__ = TranslateV1.__qualname__  # same name: only the version differs
    assert v1.fingerprint() != v2.fingerprint()


def test_the_mt_ensemble_keeps_the_asr_nbest():
    from pipelines.speech_translation import speech_translation

    pipe = speech_translation(asr_nbest=3, mt_ensemble="a,b")
    assert pipe.nodes["mt"].stage.config.use_upstream_nbest is True


@pytest.mark.parametrize("weight", [0.0, 50.0])
def test_an_ensemble_over_the_nbest_picks_what_the_mt_stage_picks(tiny_marian, weight):
    """One member: the ensemble must choose among the ASR hypotheses exactly as the plain MT stage does."""
    from stages.ensemble import EnsembleTranslate
    from stages.payloads import Hypothesis
    from stages.translate import SourceText

    nbest = [Hypothesis(text="the cat sees a dog .", score=-3.0), Hypothesis(text="a cat runs", score=-0.1),
             Hypothesis(text="who is not big ?", score=-2.0)]
    items = [SourceText(text=nbest[0].text, nbest=nbest), SourceText(text="the small red house")]
    single = Translate(model=str(tiny_marian), num_beams=2, max_new_tokens=12, use_upstream_nbest=True,
                       upstream_weight=weight, empty_source="empty")
    ens = EnsembleTranslate(members=[str(tiny_marian)], num_beams=2, max_new_tokens=12, use_upstream_nbest=True,
                            upstream_weight=weight)
    want = single.process(items)
    got = ens.process(items)
    assert [(r.source_text, r.text) for r in got] == [(r.source_text, r.text) for r in want]
    if weight == 50.0:  # the ASR score dominates: its best hypothesis is the one translated
        assert got[0].source_text == "a cat runs"
