"""Which absent tensors are legitimately tied to another one (lm_head -> embed_tokens, ...).

Hugging Face drops tied copies when saving. We ask transformers itself: build the model
class named in config.json on the meta device (no memory, no weights) and read its tied
keys, which already honour `tie_word_embeddings`. Only called when a tensor is missing.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Dict

import torch

LOG = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def tied_sources(model_dir: str) -> Dict[str, str]:
    """{tied tensor name: the tensor it shares storage with}; {} if transformers cannot tell."""
    try:
        import transformers

        config = transformers.AutoConfig.from_pretrained(model_dir)
        cls = getattr(transformers, (config.architectures or [""])[0], None)
        if cls is None:
            return {}
        with torch.device("meta"):
            model = cls(config)
        tied = getattr(model, "all_tied_weights_keys", None)
        if tied is None:  # transformers < 5: a list of tied target names, source = input embeddings
            names = getattr(model, "_tied_weights_keys", None) or []
            emb = model.get_input_embeddings()
            source = next((n for n, p in model.named_parameters() if p is emb.weight), None)
            tied = {n: source for n in names} if source and getattr(config, "tie_word_embeddings", True) else {}
        return {str(k): str(v) for k, v in dict(tied).items()}
    except Exception as exc:  # unknown architecture, remote code, ...
        LOG.warning("cannot determine tied weights of %s: %s", Path(model_dir).name, exc)
        return {}
