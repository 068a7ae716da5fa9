"""Issue 15 item 17: a target language the model cannot write is one usage error before any item runs.

Before the fix `--target fr` or `--target xx` with an English->German model returned German
labelled fr / xx, exit 0.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from flows.run_job import run
from pipelines.catalog import resolve
from stages.runtime.model_languages import check_target_language, parse_language
from stages.testing.tiny_checkpoints import save_marian
from stages.testing.tiny_tokenizers import word_tokenizer
from stages.translate import Translate, generation_kwargs
from tests.conftest import CASCADE


@pytest.fixture(scope="module")
def en_de(tmp_path_factory):
    return save_marian(tmp_path_factory.mktemp("pair") / "opus-mt-en-de")  # a single pair, by its name


@pytest.fixture(scope="module")
def multilingual_tokenizer():
    tok = word_tokenizer()
    tok.add_tokens(["__en__", "__de__", "__es__"], special_tokens=True)  # M2M100-style language tokens
    return tok


@pytest.mark.parametrize("code", ["xx", "german", "zz-ZZ", ""])
def test_unknown_language_code(code):
    with pytest.raises(ValueError, match="unknown language code"):
        parse_language(code)


@pytest.mark.parametrize("target, ok", [("de", True), ("deu", True), ("de-AT", True), ("fr", False)])
def test_single_pair_model_by_name(en_de, target, ok):
    stage = Translate(model=str(en_de), target_lang=target)
    if ok:
        stage.preflight()
    else:
        with pytest.raises(ValueError, match=r"translates into 'de' \(from its name\)"):
            stage.preflight()


def test_single_pair_model_by_tokenizer_config(tmp_path):
    model = save_marian(tmp_path / "mt")  # a name that says nothing
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "target_lang": "deu"}))
    Translate(model=str(model), target_lang="de").preflight()
    with pytest.raises(ValueError, match=r"translates into 'deu' \(from tokenizer_config.json target_lang\)"):
        Translate(model=str(model), target_lang="fr").preflight()


def test_multilingual_model_without_the_language_token(tmp_path, multilingual_tokenizer):
    multilingual_tokenizer.save_pretrained(tmp_path / "m2m")
    Translate(model=str(tmp_path / "m2m"), target_lang="es").preflight()
    with pytest.raises(ValueError, match=r"has no token for it \(it has __de__, __en__, __es__\)"):
        Translate(model=str(tmp_path / "m2m"), target_lang="fr").preflight()


def test_language_tokens_steer_generation(multilingual_tokenizer):
    kwargs = generation_kwargs(multilingual_tokenizer, "en", "deu")  # 'deu' finds __de__
    assert kwargs == {"forced_bos_token_id": multilingual_tokenizer.convert_tokens_to_ids("__de__")}
    assert generation_kwargs(word_tokenizer(), "en", "de") == {}  # single pair: nothing to force


def test_run_refuses_before_any_item(en_de, tmp_path):
    pipe = resolve("translate", {"model": str(en_de), "target": "fr"})
    with pytest.raises(ValueError, match=r"node mt: target language 'fr': model .*opus-mt-en-de translates into 'de'"):
        run(pipe, [{"id": "a", "text": "the cat"}], out=str(tmp_path / "runs"), job_id="j")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("target, says", [("fr", "translates into 'de'"), ("xx", "unknown language code 'xx'")])
def test_cli_target_the_model_cannot_write_exits_2(en_de, tmp_path, cli_env, target, says):
    (tmp_path / "in.txt").write_text("the cat sees a dog .\n")
    proc = subprocess.run([*CASCADE, "run", "translate", str(tmp_path / "in.txt"), "-p", f"model={en_de}",
                           "--target", target, "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, target", [("Helsinki-NLP/opus-mt-en-de", "de"), ("x/opus-mt-eng-deu", "deu"),
                                          ("Helsinki-NLP/opus-mt-en-mul", None), ("Helsinki-NLP/opus-mt-en-zle", None),
                                          ("Helsinki-NLP/opus-mt-en-ROMANCE", None), ("runs/mt-a", None)])
def test_target_from_a_model_name(name, target):
    from stages.runtime.model_languages import declared_target

    found = declared_target(name)
    assert (found[0] if found else None) == target  # groups (mul, zle, ROMANCE) constrain nothing
