"""Sparse MoE feed-forward layers inside a transformers Marian (MarianMTModel) translation model.

    moe_cfg = MoEConfig(d_model=160, d_ff=640, n_experts=4, top_k=2, router="topk")
    names = convert_marian_to_moe(model, moe_cfg, layers="all", upcycle=True)  # in place
    out = model(**batch); loss = ce + moe_aux_loss(model, masks)              # training
    save_moe_marian(model, tokenizer, "build/moe/x"); model, tok = load_moe_marian("build/moe/x")

A Marian layer's feed-forward is `fc2(act(fc1(x)))` with biases (GELU for the demo MT), not the
SwiGLU of `SparseMoE`, so the experts here are Marian FFNs: `MarianMoEFFN` reuses our `ExpertRouter`,
capacity dropping and `MoEStats` (Switch balance loss, z-loss, ...) and runs E biased
fc1 -> act -> fc2 experts on the sorted (token, slot) rows. It takes the place of `fc1`; the
layer's `activation_fn` and `fc2` become identities, so the surrounding dropout, residual and
post-LayerNorm of the Marian layer are untouched (activation_dropout, 0 in the demo MT, would then
apply to the FFN output instead of the hidden activation).

Sparse upcycling (Komatsuzaki et al. 2022): every expert starts as a copy of the dense FFN and the
router starts small and random. With renormalised top-k weights the copies' weighted sum equals
the dense FFN, so the upcycled model computes the dense model's function until training moves it.

On disk: the HF `config.json` (a Marian config marked `"cascadekit_moe": "moe_config.json"`),
`generation_config.json`, `moe_config.json` (the MoEConfig and which layers are sparse),
`model.safetensors` (the full state dict, tied embeddings stored once) and the tokenizer files.
Every model path a stage takes goes through stages.runtime.hf_loading.load_pretrained, which
spots such a dir (`is_moe_marian`) and loads it here, not as the dense Marian of config.json.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.methods.moe.moe_config import MoEConfig
from stages.methods.moe.expert_dispatch import _combine_slots, _sort_slots
from stages.methods.moe.gating import Routing, ExpertRouter
from stages.methods.moe.balance_losses import MoEStats

MOE_CONFIG_NAME = "moe_config.json"
MOE_MARKER = "cascadekit_moe"  # config.json key naming MOE_CONFIG_NAME: survives copying config.json alone
WEIGHTS_NAME = "model.safetensors"
LayerChoice = Literal["all", "every_other", "encoder", "decoder"]


class MarianMoEFFN(nn.Module):
    """ExpertRouter + E Marian FFN experts: y = Σ_slots w · (fc2_e(act(fc1_e(x))) ).

    Parameters: router.weight (E, d); fc1_weight (E, f, d), fc1_bias (E, f),
    fc2_weight (E, d, f), fc2_bias (E, d). `last_stats` holds the MoEStats of the latest forward.
    """

    def __init__(self, cfg: MoEConfig, activation: str = "gelu"):
        super().__init__()
        if cfg.shared_d_ff:
            raise ValueError("MarianMoEFFN has no shared expert; set shared_d_ff=None")
        from transformers.activations import ACT2FN

        self.cfg = cfg
        self.activation = activation
        self.act = ACT2FN[activation]
        E, d, f = cfg.n_experts, cfg.d_model, cfg.d_ff
        self.router = ExpertRouter(cfg)
        self.fc1_weight = nn.Parameter(torch.randn(E, f, d) * cfg.init_std)
        self.fc1_bias = nn.Parameter(torch.zeros(E, f))
        self.fc2_weight = nn.Parameter(torch.randn(E, d, f) * cfg.init_std)
        self.fc2_bias = nn.Parameter(torch.zeros(E, d))
        self.last_stats: MoEStats | None = None

    def extra_repr(self) -> str:
        c = self.cfg
        return f"d_model={c.d_model}, d_ff={c.d_ff}, n_experts={c.n_experts}, top_k={c.top_k}, act={self.activation}"

    @torch.no_grad()
    def upcycle_from(self, fc1: nn.Linear, fc2: nn.Linear) -> MarianMoEFFN:
        """Every expert := a copy of the dense FFN (fc1, fc2); the router keeps its small random init."""
        self.fc1_weight.copy_(fc1.weight.expand_as(self.fc1_weight))
        self.fc1_bias.copy_(fc1.bias.expand_as(self.fc1_bias))
        self.fc2_weight.copy_(fc2.weight.expand_as(self.fc2_weight))
        self.fc2_bias.copy_(fc2.bias.expand_as(self.fc2_bias))
        return self

    def _experts(self, x: Tensor, expert: Tensor, weight: Tensor) -> Tensor:
        """Sorted dispatch (as stages.methods.moe.expert_dispatch.sorted_experts) with biased fc1/act/fc2 experts."""
        E = self.cfg.n_experts
        order, token, counts = _sort_slots(expert, E)
        counts = counts.tolist()
        n_kept = len(order) - counts[E]
        rows = x.index_select(0, token[:n_kept])
        slot_out = x.new_zeros(expert.numel(), x.shape[1])
        start = 0
        for e, n in enumerate(counts[:E]):
            if n:
                h = self.act(F.linear(rows[start:start + n], self.fc1_weight[e], self.fc1_bias[e]))
                slot_out.index_copy_(0, order[start:start + n], F.linear(h, self.fc2_weight[e], self.fc2_bias[e]))
                start += n
        return _combine_slots(slot_out, weight)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        routing = self.router(flat)
        out = self._experts(flat, routing.expert, routing.weight)
        self.last_stats = MoEStats(routing, self.cfg)
        return out.view(x.shape).to(x.dtype)


def marian_ffn_layers(model: nn.Module) -> dict[str, nn.Module]:
    """'encoder.layers.i' / 'decoder.layers.i' -> the Marian layer holding fc1/fc2."""
    base = model.model if hasattr(model, "model") else model
    out = {}
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(base, side).layers):
            out[f"{side}.layers.{i}"] = layer
    return out


def choose_layers(model: nn.Module, which: LayerChoice | Iterable[str] = "all") -> list[str]:
    """Layer names to make sparse. every_other: layers 1, 3, ... of each stack (GShard's pattern)."""
    names = list(marian_ffn_layers(model))
    if not isinstance(which, str):
        chosen = list(which)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"unknown layers {unknown}; known: {names}")
        return chosen
    if which == "all":
        return names
    if which in ("encoder", "decoder"):
        return [n for n in names if n.startswith(which)]
    if which == "every_other":
        return [n for n in names if int(n.rsplit(".", 1)[1]) % 2 == 1]
    raise ValueError(f"layers={which!r}; use all, every_other, encoder, decoder or a list of names")


def convert_marian_to_moe(model: nn.Module, cfg: MoEConfig, layers: LayerChoice | Iterable[str] = "all",
                          upcycle: bool = True, seed: int | None = None) -> list[str]:
    """Put a MarianMoEFFN in place of fc1/act/fc2 of the chosen layers (in place); returns their names.

    cfg.d_model must be the model's d_model; cfg.d_ff is overridden by each layer's FFN width when
    upcycling (experts are copies), else taken as given. `seed` fixes the router/expert init.
    """
    config = model.config
    if cfg.d_model != config.d_model:
        raise ValueError(f"MoEConfig.d_model={cfg.d_model} but the Marian model has d_model={config.d_model}")
    if seed is not None:
        torch.manual_seed(seed)
    layer_of = marian_ffn_layers(model)
    names = choose_layers(model, layers)
    ref = next(model.parameters())
    for name in names:
        layer = layer_of[name]
        if isinstance(layer.fc1, MarianMoEFFN):
            raise ValueError(f"{name} is already sparse")
        layer_cfg = cfg.replace(d_ff=layer.fc1.out_features) if upcycle else cfg
        moe = MarianMoEFFN(layer_cfg, config.activation_function).to(device=ref.device, dtype=ref.dtype)
        if upcycle:
            moe.upcycle_from(layer.fc1, layer.fc2)
        layer.fc1, layer.fc2, layer.activation_fn = moe, nn.Identity(), nn.Identity()
    model.config.moe_layers = names  # informative only; the loader reads moe_config.json
    return names


def moe_modules(model: nn.Module) -> dict[str, MarianMoEFFN]:
    return {name: layer.fc1 for name, layer in marian_ffn_layers(model).items() if isinstance(layer.fc1, MarianMoEFFN)}


def masked_stats(stats: MoEStats, mask: Tensor | None) -> MoEStats:
    """The stats of only the tokens where mask (any shape flattening to T) is true, e.g. not padding."""
    if mask is None:
        return stats
    keep = mask.reshape(-1).to(torch.bool).to(stats.routing.logits.device)
    if keep.numel() != stats.routing.logits.shape[0]:
        raise ValueError(f"mask has {keep.numel()} entries, routing has {stats.routing.logits.shape[0]} tokens")
    r = stats.routing
    values = {f.name: (None if getattr(r, f.name) is None else getattr(r, f.name)[keep]) for f in fields(Routing)}
    return MoEStats(Routing(**values), stats.cfg)


def layer_stats(model: nn.Module, encoder_mask: Tensor | None = None,
                decoder_mask: Tensor | None = None) -> dict[str, MoEStats]:
    """MoEStats of the latest forward per sparse layer, restricted to real (unpadded) tokens if masks given."""
    out = {}
    for name, moe in moe_modules(model).items():
        if moe.last_stats is None:
            raise RuntimeError(f"{name} has no stats: run a forward first")
        mask = encoder_mask if name.startswith("encoder") else decoder_mask
        out[name] = masked_stats(moe.last_stats, mask)
    return out


def moe_aux_loss(model: nn.Module, encoder_mask: Tensor | None = None, decoder_mask: Tensor | None = None) -> Tensor:
    """Sum over sparse layers of each layer's aux loss (its cfg's coefficients) on unpadded tokens."""
    stats = layer_stats(model, encoder_mask, decoder_mask)
    if not stats:
        return next(model.parameters()).new_zeros(())
    return torch.stack([s.aux_loss for s in stats.values()]).sum()


def param_counts(model: nn.Module) -> dict[str, int]:
    """Total parameters (tied ones once) and parameters one token uses (top_k of E experts per layer)."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for moe in moe_modules(model).values():
        c = moe.cfg
        per_expert = (moe.fc1_weight[0].numel() + moe.fc1_bias[0].numel()
                      + moe.fc2_weight[0].numel() + moe.fc2_bias[0].numel())
        inactive += (c.n_experts - c.top_k) * per_expert
    return {"total": total, "active": total - inactive}


def save_moe_marian(model: nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """Write config.json, generation_config.json, moe_config.json, model.safetensors (+ tokenizer)."""
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("moe_layers", None)
    config.pop(MOE_MARKER, None)
    config["dtype"] = "float32"
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out_dir)
    mods = moe_modules(model)
    cfgs = {m.cfg.model_dump_json() for m in mods.values()}
    meta = {
        "format": "cascadekit-marian-moe/1",
        "layers": {name: {"d_ff": m.cfg.d_ff, "activation": m.activation} for name, m in mods.items()},
        "moe": next(iter(mods.values())).cfg.model_dump() if mods else None,
        "uniform": len(cfgs) <= 1,
    }
    if len(cfgs) > 1:
        meta["per_layer"] = {name: m.cfg.model_dump() for name, m in mods.items()}
    if mods:  # a dense model is saved without them and loads back dense
        config[MOE_MARKER] = MOE_CONFIG_NAME
        (out_dir / MOE_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    save_model(model, str(out_dir / WEIGHTS_NAME))  # drops the tied copies of the embedding
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def is_moe_marian(path: str | Path) -> bool:
    """A local dir written by save_moe_marian with sparse layers (moe_config.json, or the config.json marker)."""
    path = Path(path).expanduser()
    if (path / MOE_CONFIG_NAME).is_file():
        return True
    try:
        return MOE_MARKER in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):  # no config.json, or not JSON: not ours to judge here
        return False


def load_moe_marian(path: str | Path, with_tokenizer: bool = True, device: str = "cpu"):
    """Inverse of save_moe_marian: (model in eval mode, tokenizer or None). A dir without
    moe_config.json loads as a plain Marian (so dense baselines saved the same way load too).
    Weights that do not fit the model built (missing, unexpected keys) raise BadCheckpoint."""
    from safetensors.torch import load_model
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    from stages.runtime.hf_loading import BadCheckpoint, check_weight_keys

    path = Path(path).expanduser()
    if not (path / WEIGHTS_NAME).exists():
        raise FileNotFoundError(f"{path / WEIGHTS_NAME} not found (train an MoE Marian with `cascade train moe` "
                                "or `cascade train upcycle`)")
    config = MarianConfig.from_pretrained(path)
    model = MarianMTModel(config)
    meta_path = path / MOE_CONFIG_NAME
    if not meta_path.exists() and getattr(config, MOE_MARKER, None):
        raise BadCheckpoint(f"{path}: config.json marks a MoE model but {MOE_CONFIG_NAME} is missing; "
                            "copy the whole folder save_moe_marian wrote")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        per_layer = meta.get("per_layer") or {name: meta["moe"] for name in meta["layers"]}
        for name, cfg_dict in per_layer.items():
            convert_marian_to_moe(model, MoEConfig(**cfg_dict), layers=[name], upcycle=False)
        model.config.moe_layers = list(per_layer)
    missing, unexpected = load_model(model, str(path / WEIGHTS_NAME), strict=False)
    check_weight_keys(str(path), missing, unexpected)
    if (path / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)
    model.to(device).eval()
    tokenizer = None
    if with_tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
