"""Copy what makes the output dir loadable by from_pretrained: config, tokenizer, generation config."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

_TOKENIZER_PATTERNS = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt",
    "*.model", "*.spm", "chat_template*", "preprocessor_config.json", "generation_config.json",
    "moe_config.json",  # a merge of MoE Marians (stages/methods/moe/moe_marian.py) loads back as MoE
)
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float64: "float64"}


def copy_config(source: Path, out_dir: Path, dtype: Optional[torch.dtype]) -> None:
    """config.json from `source`, its dtype updated to the merged weights' dtype."""
    src = source / "config.json"
    if not src.is_file():
        return
    config = json.loads(src.read_text())
    if dtype in _DTYPE_NAMES:
        config["dtype" if "dtype" in config or "torch_dtype" not in config else "torch_dtype"] = _DTYPE_NAMES[dtype]
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def copy_tokenizer(source: Path, out_dir: Path) -> list[str]:
    copied = []
    for pattern in _TOKENIZER_PATTERNS:
        for file in sorted(source.glob(pattern)):
            if file.is_file() and not (out_dir / file.name).exists():
                shutil.copy2(file, out_dir / file.name)
                copied.append(file.name)
    return copied
