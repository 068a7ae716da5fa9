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
        model = load_pretrained(auto_cls, name_or_path, dtype=dt, **kwargs).to(dev).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        check_finite(model, name_or_path)
        if prepare is not None:
            prepare(model)
        return model, tokenizer

    return load_cached(f"hf:{auto_cls}:{revision}:{variant}", name_or_path, dev, dt, load)


def load_pretrained(auto_cls: str, name_or_path: str, **kwargs):
    """`transformers.<auto_cls>.from_pretrained`, made strict, for every stage that takes a model path.

    Weights that do not fit the architecture (missing or unexpected keys) are an error, not a
    warning over a half-random model. A cascadekit MoE Marian dir (save_moe_marian) is loaded as
    what it is: plain transformers would build the dense Marian of its config.json, random FFNs.
    """
    import transformers

    from stages.methods.moe.moe_marian import is_moe_marian, load_moe_marian

    if is_moe_marian(name_or_path):
        if auto_cls != "AutoModelForSeq2SeqLM":
            raise BadCheckpoint(f"{name_or_path}: a MoE Marian translation model, not a {auto_cls} model")
        model, _ = load_moe_marian(name_or_path, with_tokenizer=False)
        return model.to(kwargs["dtype"]) if kwargs.get("dtype") else model
    model, info = getattr(transformers, auto_cls).from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    check_weight_keys(name_or_path, info["missing_keys"], info["unexpected_keys"], info.get("mismatched_keys", ()))
    return model


def check_weight_keys(name: str, missing, unexpected, mismatched=()) -> None:
    """Raise BadCheckpoint naming a few of the keys when the checkpoint and the model disagree."""
    problems = []
    for what, keys in (("missing from the checkpoint", missing), ("not in the model", unexpected),
                       ("of another shape", mismatched)):
        keys = sorted(k if isinstance(k, str) else str(k[0]) for k in keys)  # mismatched: (key, shapes...)
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} weights {what} ({', '.join(keys[:3])}{more})")
    if problems:
        raise BadCheckpoint(f"{name}: the weights do not match the model its config describes: "
                            f"{'; '.join(problems)}. The checkpoint is damaged or of another architecture")


class BadCheckpoint(ConfigError):
    """The weights are unusable (NaN/Inf, or not the model's keys): every item would come out as garbage."""


def check_finite(model, name: str) -> None:
    for pname, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise BadCheckpoint(f"{name}: parameter {pname} contains NaN or Inf; the checkpoint is corrupt")


def hf_identity(name_or_path: str, revision: str | None) -> str:
    return f"{path_identity(name_or_path)}@{revision or 'main'}"


