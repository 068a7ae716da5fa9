"""Pipelines and model variants for the bad-input corpus (tests/flows/test_bad_inputs.py).

Importable by the CLI as tests.toy_bad_pipelines:NAME.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.graph import Pipeline


def asr_mt(asr_model: str, mt_model: str, max_seconds: float = 15.0, language: str | None = None) -> Pipeline:
    """Speech translation with a short audio limit, so 'too long' is cheap to test."""
    from stages.asr import WhisperASR
    from stages.translate import Translate

    asr = WhisperASR(model=asr_model, max_seconds=max_seconds, language=language)
    return Pipeline("bad-asr-mt").add("asr", asr).add("mt", Translate(model=mt_model, num_beams=1, empty_source="empty")).connect(
        "asr", "mt").validate()


def from_yaml(config: str) -> Pipeline:
    """A pipeline described by a YAML file: `{translate: {model: DIR, beams: N}}`.

    The pattern for factories that read config files: any problem with the
    file is a ValueError naming the file, which the CLI turns into exit 2.
    """
    import yaml

    from pipelines.speech_translation import translate

    try:
        data = yaml.safe_load(Path(config).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or set(data) != {"translate"} or not isinstance(data["translate"], dict):
        raise ValueError(f"{config}: expected one key 'translate' holding a mapping")
    return translate(**data["translate"])


def poison_with_nan(model_dir: Path, out_dir: Path) -> Path:
    """A copy of a saved HF model whose weights are all NaN."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out_dir)
    weights = out_dir / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
              weights, metadata={"format": "pt"})
    return out_dir
