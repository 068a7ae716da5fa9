"""experiments/results_refine.py: a missing model stops the script with the command that trains it."""
from __future__ import annotations

import sys

import pytest

from experiments import results_refine


def test_missing_models_name_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["results_refine", "--deliberation", str(tmp_path / "delib"),
                                      "--cmlm", str(tmp_path / "cmlm"), "--mlm", str(tmp_path / "mlm")])
    with pytest.raises(SystemExit) as exc:
        results_refine.main()
    message = str(exc.value)
    assert str(tmp_path / "delib" / "first-pass") in message
    assert "experiments.train_deliberation --out build/deliberation" in message


def test_each_model_kind_has_its_own_hint(tmp_path):
    (tmp_path / "cmlm").mkdir()
    (tmp_path / "cmlm" / "config.json").write_text("{}")  # an HF folder is not a CMLM folder
    with pytest.raises(SystemExit, match="experiments.train_cmlm cmlm --out build/cmlm"):
        results_refine.require(tmp_path / "cmlm", "cmlm_config.json", "cmlm")
    with pytest.raises(SystemExit, match="experiments.train_cmlm mlm --out build/mlm-en"):
        results_refine.require(tmp_path / "nothing", "config.json", "mlm")
    (tmp_path / "cmlm" / "cmlm_config.json").write_text("{}")
    assert results_refine.require(tmp_path / "cmlm", "cmlm_config.json", "cmlm") == tmp_path / "cmlm"
