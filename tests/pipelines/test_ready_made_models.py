"""Ready-made pipelines use the demo models only in a checkout; installed, they ask for a model by its flag."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipelines import speech_translation
from pipelines.catalog import resolve


def _models(pipe):
    return {name: node.stage.config.model for name, node in pipe.nodes.items()}


def test_a_checkout_defaults_to_the_demo_models():
    assert speech_translation.ASSETS.is_dir()  # this test runs from a checkout
    assert _models(resolve("speech-translation")) == {"asr": speech_translation.DEMO_ASR,
                                                      "mt": speech_translation.DEMO_MT}
    assert _models(resolve("translate")) == {"mt": speech_translation.DEMO_MT}
    assert _models(resolve("generate")) == {"generate": speech_translation.DEMO_LM}


@pytest.mark.parametrize("name, params, flag", [
    ("speech-translation", {}, "-p asr_model="),
    ("speech-translation", {"asr_model": "tiny"}, "-p mt_model="),
    ("transcribe", {}, "-p model="),
    ("translate", {}, "-p model="),
    ("generate", {}, "-p model="),
])
def test_installed_without_assets_a_missing_model_names_its_flag(name, params, flag, tmp_path, monkeypatch):
    monkeypatch.setattr(speech_translation, "ASSETS", tmp_path / "not-shipped")
    with pytest.raises(ValueError, match=flag):
        resolve(name, params)


def test_installed_without_assets_given_models_are_used(tmp_path, monkeypatch):
    monkeypatch.setattr(speech_translation, "ASSETS", tmp_path / "not-shipped")
    pipe = resolve("speech-translation", {"asr_model": "tiny", "mt_model": "Helsinki-NLP/opus-mt-en-de"})
    assert _models(pipe) == {"asr": "tiny", "mt": "Helsinki-NLP/opus-mt-en-de"}
    ensemble = resolve("speech-translation", {"asr_model": "tiny", "mt_ensemble": "a,b"})  # no mt_model needed
    assert ensemble.nodes["mt"].stage.config.members == ["a", "b"]


def test_the_cli_says_which_flag_in_one_line(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.setattr(speech_translation, "ASSETS", tmp_path / "not-shipped")
    (tmp_path / "a.wav").write_bytes(b"")
    res = CliRunner().invoke(app, ["run", "speech-translation", str(tmp_path / "a.wav"), "--out", str(tmp_path)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pass -p asr_model=NAME_OR_PATH" in lines[0], res.output
