"""The converter refuses what it cannot rewrite, with a message that says why (no real model needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from scripts.convert_ct2_whisper import ConversionError, convert, read_ct2_model


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _model_bin(path, name="WhisperSpec", version=6, variables=(), aliases=()):
    """A model.bin in CTranslate2's layout (ctranslate2.specs.model_spec writes the same)."""
    out = struct.pack("<I", version) + _string(name) + struct.pack("<II", 3, len(variables))
    for var_name, array in variables:
        array = np.asarray(array, dtype=np.float32)
        out += _string(var_name) + struct.pack("<B", array.ndim)
        out += b"".join(struct.pack("<I", d) for d in array.shape)
        out += struct.pack("<BI", 0, array.nbytes) + array.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases)
    path.mkdir(exist_ok=True)
    (path / "model.bin").write_bytes(out)
    return path


def test_reads_variables_and_aliases(tmp_path):
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = read_ct2_model(_model_bin(tmp_path, variables=[("decoder/embeddings/weight", weight)],
                                      aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
                           / "model.bin")
    assert model.name == "WhisperSpec"
    np.testing.assert_array_equal(model.variables["decoder/embeddings/weight"].numpy(), weight)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


@pytest.mark.parametrize("kwargs, message", [
    ({"version": 5}, "binary version 5"),
    ({"name": "TransformerSpec"}, "not a Whisper model"),
    ({"variables": [("decoder/embeddings/weight", np.zeros((4, 2)))],
      "aliases": [("decoder/projection/weight", "decoder/embeddings/weight")]}, "variable 'encoder/conv1/weight'"),
    ({"variables": [("decoder/embeddings/weight", np.zeros((4, 2)))]}, "ties the output projection"),
    ({"variables": [("encoder/layer_0/ffn/linear_0/weight_scale", np.ones(2))]}, "quantized"),
])
def test_refuses_with_a_reason(tmp_path, kwargs, message):
    with pytest.raises(ConversionError, match=message):
        convert(_model_bin(tmp_path / "ct2", **kwargs), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_truncated_file(tmp_path):
    folder = _model_bin(tmp_path, variables=[("decoder/embeddings/weight", np.zeros((4, 2)))])
    (folder / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:40])
    with pytest.raises(ConversionError, match="truncated|end of file"):
        read_ct2_model(folder / "model.bin")
