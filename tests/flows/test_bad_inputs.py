"""A corpus of bad inputs across stages: each bad item fails alone with one clear error, the rest of
the job completes, and the CLI exits 3. Problems of the job's configuration instead (a missing
model path, a bad YAML file, an invalid stage setting) are usage errors: exit 2, one line.

Which is which:
  per item (exit 3)  anything about one input: its file, its bytes, its fields, its length.
  usage (exit 2)     anything that would fail every item alike: model paths, config files, settings.

Every case here once was, or still is, a gap that a demanding user would hit; each asserts the
clear, typed outcome.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from flows.cli import app
from stages.testing.tiny_checkpoints import make_whisper
from tests.audio_samples import tone
from tests.toy_bad_pipelines import poison_with_nan


def cascade(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def job_files(job: Path) -> tuple[dict, dict]:
    outputs = {r["id"]: r for r in map(json.loads, (job / "outputs.jsonl").read_text().splitlines())}
    errors = {e["item_id"]: e for e in map(json.loads, (job / "errors.jsonl").read_text().splitlines())}
    return outputs, errors


def check_errors(errors: dict, expected: dict[str, tuple[str, str, str]]) -> None:
    """expected: item id -> (stage, kind, a phrase the message must contain)."""
    assert set(errors) == set(expected), f"unexpected/missing: {set(errors) ^ set(expected)}"
    for item_id, (stage, kind, needle) in expected.items():
        err = errors[item_id]
        assert (err["stage"], err["kind"]) == (stage, kind), (item_id, err)
        assert needle in err["message"], (item_id, err["message"])
        assert "Traceback" not in err["message"]


# -- audio, through ASR -> MT ------------------------------------------------------------------

@pytest.fixture(scope="module")
def audio_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-audio")
    sf.write(d / "ok.wav", tone(2.0, seed=1), 16000)
    sf.write(d / "silence.wav", np.zeros(32000, np.float32), 16000)
    sf.write(d / "rate8k.wav", tone(2.0, rate=8000, seed=2), 8000)
    sf.write(d / "stereo48k.wav", np.stack([tone(1.0, rate=48000), tone(1.0, rate=48000, freq=220)], 1), 48000)
    (d / "empty.wav").write_bytes(b"")
    (d / "corrupt.wav").write_bytes(b"RIFF\xff\xff\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(3000))
    (d / "not_audio.wav").write_text("this is a text file, not audio\n" * 20)
    sf.write(d / "zero_len.wav", np.zeros(0, np.float32), 16000)
    nan = tone(1.0)
    nan[100:200] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "truncated.wav").write_bytes((d / "ok.wav").read_bytes()[:30])
    sf.write(d / "too_long.wav", tone(20.0, seed=3), 16000)  # over max_seconds=15 of the pipeline
    (d / "a_folder.wav").mkdir()
    rows = [{"id": p, "audio": str(d / f"{p}.wav")} for p in
            ["ok", "silence", "rate8k", "stereo48k", "empty", "corrupt", "not_audio", "zero_len", "nan",
             "truncated", "too_long", "a_folder"]]
    rows += [{"id": "missing_file", "audio": str(d / "nowhere.wav")},
             {"id": "no_audio_field"},
             {"id": "audio_not_a_string", "audio": 42},
             {"id": "ok", "audio": str(d / "ok.wav")}]  # a duplicate id
    lines = [json.dumps(r).encode() for r in rows]
    lines += [b"{this is not json", b"[1, 2, 3]", b'{"id": "latin1", "audio": "caf\xe9.wav"}']
    (d / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return d


def test_bad_audio_items_fail_alone_with_clear_errors(audio_corpus, tiny_whisper, tiny_marian, tmp_path):
    res = cascade("run", "tests.toy_bad_pipelines:asr_mt", audio_corpus, "--out", tmp_path, "--job-id", "audio",
                  "--batch-size", "4", "-p", f"asr_model={tiny_whisper}", "-p", f"mt_model={tiny_marian}")
    assert res.exit_code == 3, res.output
    outputs, errors = job_files(tmp_path / "audio")
    # Odd but valid audio is converted (resampled, mixed down) and transcribed; silence is not an error.
    assert sorted(outputs) == ["ok", "rate8k", "silence", "stereo48k"]
    assert all(isinstance(outputs[i]["mt"]["text"], str) for i in outputs)
    decode = "cannot decode audio"
    check_errors(errors, {
        "empty": ("asr", "bad_input", "empty (0 bytes)"),
        "corrupt": ("asr", "bad_input", decode),
        "not_audio": ("asr", "bad_input", decode),
        "zero_len": ("asr", "bad_input", "no samples"),
        "nan": ("asr", "bad_input", "NaN or infinite"),
        "truncated": ("asr", "bad_input", decode),
        "too_long": ("asr", "bad_input", "over the limit of 15 s"),
        "a_folder": ("input", "invalid_input", "not a regular file (a folder)"),  # found while hashing
        "missing_file": ("input", "invalid_input", "file not found"),
        "no_audio_field": ("input", "invalid_input", "audio: Field required"),
        "audio_not_a_string": ("input", "invalid_input", "audio: Input should be a valid string"),
        "ok": ("input", "invalid_input", "duplicate item id"),  # the second 'ok' only
        "manifest:17": ("input", "invalid_input", "not JSON"),
        "manifest:18": ("input", "invalid_input", "not an object"),
        "manifest:19": ("input", "invalid_input", "not UTF-8"),
    })


# -- text, through MT --------------------------------------------------------------------------

def test_bad_text_items_fail_alone_with_clear_errors(tiny_marian, tmp_path):
    good = {"id": "good", "text": "the cat sees a dog"}
    rows = [good, {"id": "control_chars", "text": "the \x00 cat \x07 is red"},
            {"id": "emoji", "text": "die katze 🐱"},
            {"id": "overlong", "text": " ".join(["the big red dog"] * 40)},
            {"id": "null_text", "text": None}, {"id": "number_text", "text": 7}, {"id": "no_text"},
            {"id": "list_text", "text": ["the", "cat"]}]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"the dog runs\n\xff\xfe broken bytes\n")
    res = cascade("run", "translate", data, lines, "--out", tmp_path, "--job-id", "text", "-p", f"model={tiny_marian}",
                  "-p", "beams=1")
    assert res.exit_code == 3, res.output
    outputs, errors = job_files(tmp_path / "text")
    assert sorted(outputs) == ["control_chars", "emoji", "good", "lines:1"]
    check_errors(errors, {
        "overlong": ("mt", "bad_input", "over max_input_tokens"),
        "null_text": ("input", "invalid_input", "text: Input should be a valid string"),
        "number_text": ("input", "invalid_input", "text: Input should be a valid string"),
        "list_text": ("input", "invalid_input", "text: Input should be a valid string"),
        "no_text": ("input", "invalid_input", "text: Field required"),
        "lines:2": ("input", "invalid_input", "not UTF-8"),
    })


@pytest.mark.parametrize("text", ["", " \t "])
def test_empty_text_is_a_per_item_error(tiny_marian, text):
    from stages.base import ItemError
    from stages.translate import SourceText, Translate

    [result] = Translate(model=str(tiny_marian), num_beams=1).run_batch([SourceText(text=text)])
    assert isinstance(result, ItemError) and result.kind == "bad_input"


def test_nan_weights_are_refused(tiny_marian, tmp_path):
    from stages.base import ConfigError
    from stages.translate import SourceText, Translate

    poisoned = poison_with_nan(Path(tiny_marian), tmp_path / "nan-marian")
    with pytest.raises(ConfigError, match="NaN or Inf"):  # a bad model is the job's error, not the item's
        Translate(model=str(poisoned), num_beams=1).run_batch([SourceText(text="the cat")])


# -- prompts, through generation ---------------------------------------------------------------

def test_bad_prompts_fail_alone_with_clear_errors(tiny_gpt2, tmp_path):
    rows = [{"id": "good", "text": "the cat"},
            {"id": "both", "text": "the cat", "messages": [{"role": "user", "content": "hi"}]},
            {"id": "neither"},
            {"id": "chat_without_template", "messages": [{"role": "user", "content": "the dog"}]},
            {"id": "bad_role", "messages": [{"role": "robot", "content": "beep"}]}]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = cascade("run", "generate", data, "--out", tmp_path, "--job-id", "gen", "-p", f"model={tiny_gpt2}",
                  "-p", "max_new_tokens=4")
    assert res.exit_code == 3, res.output
    outputs, errors = job_files(tmp_path / "gen")
    assert sorted(outputs) == ["good"]
    check_errors(errors, {
        # Whole-model rules (a validator across fields) are checked when the stage receives the item.
        "both": ("generate", "invalid_input", "give exactly one of text or messages"),
        "neither": ("generate", "invalid_input", "give exactly one of text or messages"),
        "chat_without_template": ("generate", "bad_input", "no chat template"),
        "bad_role": ("input", "invalid_input", "messages.0.role"),
    })


def test_prompt_longer_than_the_model_is_a_clear_error(tiny_gpt2):
    from stages.base import ItemError
    from stages.generate import Generate, Prompt

    [result] = Generate(model=str(tiny_gpt2), max_new_tokens=4).run_batch([Prompt(text="the cat " * 60)])
    assert isinstance(result, ItemError) and result.kind == "bad_input"


# -- configuration: usage errors ---------------------------------------------------------------

def test_config_problems_are_usage_errors(tiny_marian, tmp_path):
    (tmp_path / "a.txt").write_text("the cat\n")
    (tmp_path / "bad.yml").write_text("translate: {model: [unclosed\n")
    (tmp_path / "wrong.yml").write_text("- translate\n- model\n")
    (tmp_path / "ok.yml").write_text(f"translate: {{model: {tiny_marian}, beams: 1}}\n")
    text = tmp_path / "a.txt"
    cases = {
        "missing whisper checkpoint": (["transcribe", text, "-p", "model=/nonexistent/asr.pt"], "does not exist"),
        "missing MT folder": (["translate", text, "-p", f"model={tmp_path}/no-such-model"], "does not exist"),
        "bad YAML": (["tests.toy_bad_pipelines:from_yaml", text, "-p", f"config={tmp_path}/bad.yml"],
                     "not valid YAML"),
        "YAML of the wrong shape": (["tests.toy_bad_pipelines:from_yaml", text, "-p", f"config={tmp_path}/wrong.yml"],
                                    "expected one key 'translate'"),
        "invalid stage setting": (["translate", text, "-p", f"model={tiny_marian}", "-p", "beams=0"],
                                  "greater than or equal to 1"),
        "parameter of the wrong type": (["translate", text, "-p", f"model={tiny_marian}", "-p", "beams=many"],
                                        "parameter beams='many'"),
    }
    for what, (args, needle) in cases.items():
        res = cascade("run", *args, "--out", tmp_path, "--job-id", "cfg")
        assert res.exit_code == 2, (what, res.output)
        assert needle in res.output and "Traceback" not in res.output, (what, res.output)
        assert not (tmp_path / "cfg").exists(), f"{what}: nothing should start"
    # The control: the good YAML runs.
    res = cascade("run", "tests.toy_bad_pipelines:from_yaml", text, "-p", f"config={tmp_path}/ok.yml", "--out",
                  tmp_path, "--job-id", "yaml-ok")
    assert res.exit_code == 0, res.output


def test_unknown_language_code_is_a_usage_error(tiny_marian, tmp_path):
    model = make_whisper(tmp_path / "multi.pt", n_vocab=51865, sharpen=1.0)  # multilingual: language codes matter
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    res = cascade("run", "tests.toy_bad_pipelines:asr_mt", tmp_path / "a.wav", "--out", tmp_path, "--job-id", "lang",
                  "-p", f"asr_model={model}", "-p", f"mt_model={tiny_marian}", "-p", "language=xx")
    assert res.exit_code == 2, res.output
