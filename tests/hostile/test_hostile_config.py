"""Issue 15, item 15: a mistake that hits every item is one usage error (exit 2) before or at the first load,
never N per-item errors, and a model that cannot load is loaded once, not once per bisected batch."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.toy_bad_pipelines import poison_with_nan


def cascade(*args) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def lines_file(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"the cat {i}\n" for i in range(n)))
    return path


def assert_one_usage_line(code: int, output: str, needle: str) -> None:
    assert code == 2, output
    text = output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert needle in text, text


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def pickle_weights(model_dir: Path, out: Path) -> Path:
    shutil.copytree(model_dir, out)
    (out / "model.safetensors").unlink()
    with open(out / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": _Evil()}, f)
    return out


def remote_code_model(model_dir: Path, out: Path) -> Path:
    import json

    shutil.copytree(model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    # A model type transformers does not know: only the repository's own code could build it.
    cfg["model_type"] = "evil_marian"
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForSeq2SeqLM": "modeling_evil.EvilModel"}
    (out / "config.json").write_text(json.dumps(cfg))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (out / name).write_text("raise SystemExit('remote code ran')\n")
    return out


def test_cuda_without_a_gpu_is_one_usage_error_before_any_work(tiny_marian, tmp_path):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    code, output = cascade("run", "translate", lines_file(tmp_path), "--out", tmp_path / "runs", "--job-id", "j",
                           "-p", f"model={tiny_marian}", "-p", "device=cuda")
    assert_one_usage_line(code, output, "no CUDA device")
    assert not (tmp_path / "runs" / "j").exists()  # refused before the job folder was written


@pytest.mark.parametrize("case", ["nan_weights", "pickle_weights", "remote_code_without_trust", "unknown_whisper"])
def test_a_model_that_cannot_load_is_one_usage_error(case, tiny_marian, tmp_path):
    text = lines_file(tmp_path)
    if case == "unknown_whisper":
        import numpy as np
        import soundfile as sf

        clips = tmp_path / "clips"
        clips.mkdir()
        for i in range(4):
            sf.write(clips / f"c{i}.wav", np.zeros(16000, dtype="float32"), 16000)
        args = ["transcribe", clips, "-p", "model=large-v9"]
        needle = "large-v9"
    else:
        make = {"nan_weights": poison_with_nan, "pickle_weights": pickle_weights,
                "remote_code_without_trust": remote_code_model}[case]
        bad = make(Path(tiny_marian), tmp_path / case)
        args = ["translate", text, "-p", f"model={bad}"]
        needle = "cannot load model" if case != "nan_weights" else "NaN"
    code, output = cascade("run", *args, "--out", tmp_path / "runs", "--job-id", case, "--batch-size", "2")
    assert_one_usage_line(code, output, needle)
    assert "pickle code ran" not in output and "remote code ran" not in output


def test_a_failing_load_happens_once_not_once_per_bisected_item(tiny_marian, tmp_path, monkeypatch):
    import transformers

    from flows import run
    from pipelines.speech_translation import translate
    from stages.base import ConfigError
    from stages.runtime.model_cache import clear_cache

    bad = poison_with_nan(Path(tiny_marian), tmp_path / "nan")
    loads = []
    original = transformers.AutoModelForSeq2SeqLM.from_pretrained.__func__

    def counting(cls, *a, **k):
        loads.append(a[0])
        return original(cls, *a, **k)

    monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained", classmethod(counting))
    clear_cache()
    items = [{"id": f"s{i}", "text": f"the cat {i}"} for i in range(8)]
    with pytest.raises(ConfigError, match="NaN"):
        run(translate(model=str(bad), beams=1), items, out=str(tmp_path / "runs"), job_id="once", batch_size=4)
    assert loads == [str(bad)], loads  # 8 items in 2 batches, bisected before: 2 × (2·4 − 1) loads


def test_trust_remote_code_is_a_cli_flag(tiny_marian, tmp_path):
    """The flag reaches the stages (here: the MT stage's config), so a user who trusts the code can say so."""
    from flows.cli import apply_trust_remote_code
    from pipelines.speech_translation import translate

    pipe = apply_trust_remote_code(translate(model=str(tiny_marian)))
    assert pipe.nodes["mt"].stage.config.trust_remote_code is True
