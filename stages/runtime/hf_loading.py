"""Loading Hugging Face models and tokenizers through the process-wide cache."""
from __future__ import annotations

import logging
import os

import torch

from stages.base import ConfigError
from stages.runtime.model_cache import load_cached, path_identity, pick_device, pick_dtype


def _drop_length_clash(record: logging.LogRecord) -> bool:
    # Stages pass max_new_tokens on purpose; a checkpoint's own max_length default is not a clash worth a warning.
    return "`max_new_tokens` will take precedence" not in record.getMessage()


logging.getLogger("transformers.generation.utils").addFilter(_drop_length_clash)


def load_hf(auto_cls: str, name_or_path: str, device: str = "auto", dtype: str = "auto",
            revision: str | None = None, trust_remote_code: bool = False, variant: str = "", prepare=None):
    """(model, tokenizer) for a hub id or local dir; local dirs never touch the network.

    `prepare(model)` runs once after loading (e.g. swapping in our MoE layer);
    `variant` names it in the cache key so prepared and plain copies never mix.
    """
    import transformers

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    local = os.path.isdir(os.path.expanduser(name_or_path))
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, "local_files_only": local}

    def load():
        transformers.utils.logging.disable_progress_bar()  # the job's own progress bar is enough
        cls = getattr(transformers, auto_cls)
        model = cls.from_pretrained(name_or_path, dtype=dt, **kwargs).to(dev).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        check_finite(model, name_or_path)
        if prepare is not None:
            prepare(model)
        return model, tokenizer

    return load_cached(f"hf:{auto_cls}:{revision}:{variant}", name_or_path, dev, dt, load)


class BadCheckpoint(ConfigError):
    """The weights are unusable (NaN/Inf): every item would come out as garbage."""


def check_finite(model, name: str) -> None:
    for pname, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise BadCheckpoint(f"{name}: parameter {pname} contains NaN or Inf; the checkpoint is corrupt")


def hf_identity(name_or_path: str, revision: str | None) -> str:
    return f"{path_identity(name_or_path)}@{revision or 'main'}"


