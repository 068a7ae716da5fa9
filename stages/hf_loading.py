"""Loading Hugging Face models and tokenizers through the process-wide cache."""
from __future__ import annotations

import os

import torch

from stages.model_cache import load_cached, path_identity, pick_device, pick_dtype


def load_hf(auto_cls: str, name_or_path: str, device: str = "auto", dtype: str = "auto",
            revision: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) for a hub id or local dir; local dirs never touch the network."""
    import transformers

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    local = os.path.isdir(os.path.expanduser(name_or_path))
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, "local_files_only": local}

    def load():
        cls = getattr(transformers, auto_cls)
        model = cls.from_pretrained(name_or_path, dtype=dt, **kwargs).to(dev).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        return model, tokenizer

    return load_cached(f"hf:{auto_cls}:{revision}", name_or_path, dev, dt, load)


def hf_identity(name_or_path: str, revision: str | None) -> str:
    return f"{path_identity(name_or_path)}@{revision or 'main'}"


