"""Routers: per-input member weights lambda_m(x) from a small learned MLP.

Features are a mean-pooled source representation from one "feature member"
(its encoder output, or its input embeddings, which need no forward pass).
Training fits the MLP on dev data whose per-token member log-probs are
computed once by forced decoding, so an epoch costs only the MLP:

- objective "ensemble_nll": minimise -log sum_m lambda_m(x) p_m(y_t|x, y_<t)
  per token (the linear ensemble's NLL; members must share the vocabulary);
- objective "best_member": cross-entropy towards the member with the lowest
  per-token loss on that sentence (any vocabularies).

Sparsity: with `top_k`, only the k best members per input get a weight
(softmax over their logits); `routed_generate` groups inputs by their member
set, and a member with zero weight for a whole group is never run. Training
is dense (soft gating); top-k applies at inference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from stages.methods.ensembling.ensemble_decoding import ensemble_generate
from stages.methods.ensembling.ensemble_members import Member
from stages.methods.ensembling.forced_scoring import token_logprobs
from stages.methods.ensembling.token_search import BeamHypothesis


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=1)
    top_k: int | None = Field(None, ge=1)
    objective: Literal["ensemble_nll", "best_member"] = "ensemble_nll"
    features: Literal["encoder", "embeddings"] = "encoder"
    feature_member: int = 0
    epochs: int = Field(300, ge=1)
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0


class MemberRouter(nn.Module):
    def __init__(self, in_dim: int, n_members: int, hidden: int = 64, top_k: int | None = None):
        super().__init__()
        self.in_dim, self.n_members, self.hidden, self.top_k = in_dim, n_members, hidden, top_k
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, n_members))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)  # logits [B, M]

    @torch.no_grad()
    def weights(self, features: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
        """[B, M] weights summing to 1; with top-k, exact zeros outside each input's k best members."""
        logits = self(features)
        k = top_k or self.top_k
        if k is not None and k < self.n_members:
            keep = torch.zeros_like(logits, dtype=torch.bool).scatter(1, torch.topk(logits, k, dim=-1).indices, True)
            logits = logits.masked_fill(~keep, float("-inf"))  # exactly k members, even on ties
        return torch.softmax(logits, dim=-1)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "router.safetensors"))
        meta = {"in_dim": self.in_dim, "n_members": self.n_members, "hidden": self.hidden, "top_k": self.top_k}
        (directory / "router.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> "MemberRouter":
        directory = Path(directory)
        router = cls(**json.loads((directory / "router.json").read_text()))
        router.load_state_dict(load_file(str(directory / "router.safetensors")))
        return router.eval()


@torch.no_grad()
def source_features(member: Member, sources: Sequence[str],
                    kind: Literal["encoder", "embeddings"] = "encoder") -> torch.Tensor:
    """Mean over the source's real tokens of the encoder output (seq2seq) or of the input embeddings."""
    batch = member.encode_sources(sources)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    if kind == "encoder":
        if not member.is_encoder_decoder:
            raise ValueError(f"member {member.name!r} has no encoder; use features='embeddings'")
        hidden = member.model.get_encoder()(**batch, return_dict=True).last_hidden_state
    else:
        hidden = member.model.get_input_embeddings()(batch["input_ids"])
    pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return pooled.cpu()


def member_token_logprobs(members: Sequence[Member], sources: Sequence[str], targets: Sequence[str]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, M, T] per-token log-probs of the references under each member, and the [B, T] mask."""
    columns, mask, ids = [], None, None
    for member in members:
        lp, m, tgt = token_logprobs(member, sources, targets)
        if ids is not None and not torch.equal(tgt, ids):
            raise ValueError(f"member {member.name!r} tokenises the targets differently; the token-level "
                             "ensemble NLL needs a shared vocabulary (use objective='best_member')")
        columns.append(lp)
        mask, ids = m, tgt
    return torch.stack(columns, dim=1), mask


def router_loss(logits: torch.Tensor, member_lp: torch.Tensor, mask: torch.Tensor, objective: str) -> torch.Tensor:
    tokens = mask.sum(dim=1).clamp(min=1)
    if objective == "ensemble_nll":
        log_w = torch.log_softmax(logits, dim=-1)[:, :, None]  # [B, M, 1]
        mixed = torch.logsumexp(log_w + member_lp, dim=1)  # [B, T]
        return -((mixed * mask).sum(dim=1) / tokens).mean()
    per_member_loss = -(member_lp.sum(dim=2)) / tokens[:, None]
    return nn.functional.cross_entropy(logits, per_member_loss.argmin(dim=1))


def fit_router(features: torch.Tensor, member_lp: torch.Tensor, mask: torch.Tensor,
               config: RouterConfig = RouterConfig()) -> tuple[MemberRouter, list[float]]:
    """Full-batch AdamW on precomputed features and member log-probs; returns the router and loss curve."""
    torch.manual_seed(config.seed)
    router = MemberRouter(features.shape[1], member_lp.shape[1], config.hidden, config.top_k)
    optimizer = torch.optim.AdamW(router.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    mask = mask.float()
    losses = []
    for _ in range(config.epochs):
        loss = router_loss(router(features), member_lp, mask, config.objective)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
    return router.eval(), losses


def train_router(members: Sequence[Member], sources: Sequence[str], targets: Sequence[str],
                 config: RouterConfig = RouterConfig()) -> tuple[MemberRouter, list[float]]:
    """Fit a router on dev (source, reference) pairs."""
    features = source_features(members[config.feature_member], sources, config.features)
    if config.objective == "ensemble_nll":
        member_lp, mask = member_token_logprobs(members, sources, targets)
    else:  # only per-sentence totals matter: members may tokenise differently
        member_lp, mask = _sentence_level_logprobs(members, sources, targets)
    return fit_router(features, member_lp, mask, config)


def _sentence_level_logprobs(members, sources, targets) -> tuple[torch.Tensor, torch.Tensor]:
    # Encode each member's mean token log-prob as a single "token" so router_loss can treat both objectives alike.
    means = []
    for member in members:
        lp, m, _ = token_logprobs(member, sources, targets)
        means.append(lp.sum(dim=1) / m.sum(dim=1).clamp(min=1))
    return torch.stack(means, dim=1)[:, :, None], torch.ones(len(sources), 1, dtype=torch.bool)


def routed_generate(members: Sequence[Member], router: MemberRouter, sources: Sequence[str], options=None, *,
                    features: Literal["encoder", "embeddings"] = "encoder", feature_member: int = 0,
                    top_k: int | None = None, **kwargs) -> list[list[BeamHypothesis]]:
    """Decode with per-input router weights; inputs that select the same members decode together."""
    sources = list(sources)
    weights = router.weights(source_features(members[feature_member], sources, features), top_k)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(weights):
        groups.setdefault(tuple(int(m) for m in torch.nonzero(row).flatten()), []).append(i)
    results: list[list[BeamHypothesis] | None] = [None] * len(sources)
    for active, rows in groups.items():
        chosen = [members[m] for m in active]
        out = ensemble_generate(chosen, [sources[i] for i in rows], options,
                                weights=weights[rows][:, list(active)], **kwargs)
        for i, nbest in zip(rows, out):
            results[i] = nbest
    return results  # type: ignore[return-value]
