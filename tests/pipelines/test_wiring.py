"""Type-checked wiring: mistakes surface when the pipeline is built, before any model loads."""
from __future__ import annotations

from typing import Optional

import pytest
import torch
from pydantic import BaseModel

from pipelines import Pipeline, WiringError
from pipelines.typecheck import assignable
from stages.base import Stage, StageConfig
from stages.runtime.model_cache import load_cached
from stages.payloads import AudioClip, Text, Transcript, Translation
from tests.toy_stages import Split, Upper

class HeavyASR(Stage):
    """Owns a 'model' loaded through the model cache on first use; each load appends a line to `load_log`,
    so a test can see whether any load happened (in this process or a `cascade` subprocess)."""

    Input = AudioClip
    Output = Transcript
    kind = "asr"

    class Config(StageConfig):
        load_log: str = ""

    def model(self):
        def load():
            if self.config.load_log:
                with open(self.config.load_log, "a") as f:
                    f.write(f"{type(self).__name__}\n")
            return str.upper
        return load_cached("toy", self.config.load_log or "toy", torch.device("cpu"), torch.float32, load)

    def process(self, batch):
        return [Transcript(text=self.model()("x")) for _ in batch]


class HeavyText(HeavyASR):
    """HeavyASR over text, so a job can run it from a plain .txt file."""

    Input = Text
    Output = Text
    kind = "heavy"

    def process(self, batch):
        return [Text(text=self.model()(t.text)) for t in batch]


def loads(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


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


def badly_wired(load_log: str = "") -> Pipeline:
    """Every stage is built (so a stage that loaded in __init__ would show) but ww.words is never fed."""
    return (Pipeline("bad").add("heavy", HeavyText(load_log=load_log)).add("split", Split())
            .add("ww", WantsWords()).connect("heavy", "split").connect("split.n", "ww.n"))


def well_wired(load_log: str = "") -> Pipeline:
    return HeavyText(load_log=load_log) >> Split()


def test_wiring_fails_before_any_model_loads_and_good_wiring_does_load(tmp_path):
    from flows import run
    from pipelines.catalog import resolve

    log = tmp_path / "loads.txt"
    with pytest.raises(WiringError, match=r"ww.words .* is required but nothing feeds it"):
        resolve("tests.pipelines.test_wiring:badly_wired", {"load_log": str(log)})
    with pytest.raises(WiringError, match=r"ww.words .* is required but nothing feeds it"):
        run(badly_wired(str(log)), [{"id": "a", "text": "a b"}], out=str(tmp_path), job_id="bad")
    assert loads(log) == []
    assert not (tmp_path / "bad").exists()  # refused before the job folder was written
    # The same stage, wired well, loads its model once: the recorder above could have seen a load.
    pipe = resolve("tests.pipelines.test_wiring:well_wired", {"load_log": str(log)})
    result = run(pipe, [{"id": "a", "text": "a b"}], out=str(tmp_path), job_id="good")
    assert result.exit_code == 0 and result.outputs[0]["split"]["words"] == ["A", "B"]
    assert loads(log) == ["HeavyText"]


def test_cli_wiring_error_exits_2_before_loading(tmp_path, cli_env):
    import subprocess

    from tests.conftest import CASCADE

    log = tmp_path / "loads.txt"
    (tmp_path / "in.txt").write_text("a\n")

    def cascade(factory, job_id):
        return subprocess.run([*CASCADE, "run", f"tests.pipelines.test_wiring:{factory}", str(tmp_path / "in.txt"),
                               "--param", f"load_log={log}", "--out", str(tmp_path), "--job-id", job_id],
                              capture_output=True, text=True, env=cli_env, timeout=120)

    proc = cascade("badly_wired", "bad")
    assert proc.returncode == 2, proc.stderr
    assert "ww.words" in proc.stderr and "nothing feeds it" in proc.stderr and "Traceback" not in proc.stderr
    assert loads(log) == []
    proc = cascade("well_wired", "good")
    assert proc.returncode == 0, proc.stderr
    assert loads(log) == ["HeavyText"]
