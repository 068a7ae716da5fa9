"""Type-checked wiring: mistakes surface when the pipeline is built, before any model loads."""
from __future__ import annotations

from typing import Optional

import pytest
from pydantic import BaseModel

from pipelines import Pipeline, WiringError
from pipelines.typecheck import assignable
from stages.base import Stage, StageConfig
from stages.payloads import AudioClip, Text, Transcript, Translation
from tests.toy_stages import Split, Upper

LOADS = []


class HeavyASR(Stage):
    """Pretends to own a model: loading it is recorded, so tests can see it never happened."""

    Input = AudioClip
    Output = Transcript
    kind = "asr"

    def setup(self):
        LOADS.append(self)

    def process(self, batch):
        self.setup()
        return [Transcript(text="x") for _ in batch]


class NeedsNumber(Stage):
    class Input(BaseModel):
        text: int

    Output = Text
    kind = "num"


class WantsWords(Stage):
    class Input(BaseModel):
        words: list[str]
        n: Optional[int] = None

    Output = Text
    kind = "ww"


def test_type_mismatch_names_both_ends_and_types():
    with pytest.raises(WiringError) as err:
        HeavyASR() >> NeedsNumber()
    msg = str(err.value)
    assert "asr.text" in msg and "num.text" in msg
    assert "HeavyASR.Output.text: str" in msg and "NeedsNumber.Input.text: int" in msg
    assert LOADS == []


def test_no_common_field_is_refused():
    with pytest.raises(WiringError, match="no field in common"):
        HeavyASR() >> WantsWords()


def test_explicit_field_wiring_and_missing_required_input():
    pipe = Pipeline("p").add("asr", HeavyASR()).add("ww", WantsWords())
    with pytest.raises(WiringError, match="has no field 'words'"):
        pipe.connect("asr.words", "ww.words")
    with pytest.raises(WiringError, match=r"str is not assignable to Optional\[int\]"):
        pipe.connect("asr.text", "ww.n")
    with pytest.raises(WiringError, match=r"ww.words .* is required but nothing feeds it"):
        Pipeline("p").add("a", Upper()).add("s", Split()).add("ww", WantsWords()).connect("s.n", "ww.n").validate()


def test_fan_out_fan_in_dag_is_valid_and_ordered():
    pipe = (Pipeline("dag").add("up", Upper()).add("split", Split()).add("split2", Split())
            .add("ww", WantsWords()))
    pipe.connect("up", "split").connect("up", "split2").connect("split.words", "ww.words").connect("split2.n", "ww.n")
    assert pipe.validate().order() == ["up", "split", "split2", "ww"]
    assert pipe.roots() == ["up"] and pipe.sinks() == ["ww"]


def test_cycle_is_refused():
    pipe = Pipeline("c").add("a", Upper()).add("b", Upper())
    pipe.connect("a", "b")
    with pytest.raises(WiringError, match="cycle"):
        pipe.connect("b", "a")


def test_assignable_rules():
    assert assignable(str, Optional[str])
    assert not assignable(Optional[str], str)
    assert assignable(int, float) and not assignable(float, int)
    assert assignable(list[str], list[str]) and not assignable(list[int], list[str])
    assert assignable(Transcript, Transcript) and not assignable(Translation, Transcript)


def test_unknown_stage_config_key_is_an_error():
    with pytest.raises(Exception, match="extra"):
        Upper(nonsense=1)


def test_cli_wiring_error_exits_2_before_loading(tmp_path, cli_env):
    import subprocess

    from tests.conftest import CASCADE

    (tmp_path / "bad_pipe.py").write_text(
        "from tests.pipelines.test_wiring import HeavyASR, NeedsNumber\n"
        "def build():\n    return HeavyASR() >> NeedsNumber()\n")
    (tmp_path / "in.txt").write_text("a\n")
    env = {**cli_env, "PYTHONPATH": f"{tmp_path}:{cli_env['PYTHONPATH']}"}
    proc = subprocess.run([*CASCADE, "run", "bad_pipe:build", str(tmp_path / "in.txt")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cannot connect asr.text" in proc.stderr and "Traceback" not in proc.stderr
