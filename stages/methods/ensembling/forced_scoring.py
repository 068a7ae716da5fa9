"""Forced decoding: how likely is a given target under one member (teacher forcing).

One batched forward per member (optionally cut into chunks of `batch_size`
rows to bound memory). Seq2seq targets are tokenised as the model's targets
(`text_target`, with its EOS); causal targets follow the prompt and get the
EOS appended (as generation would end with it).
"""

from __future__ import annotations

from typing import Sequence

import torch

from stages.methods.ensembling.ensemble_members import Member


def _target_ids(member: Member, targets: Sequence[str] | Sequence[Sequence[int]], append_eos: bool
                ) -> list[list[int]]:
    if targets and not isinstance(targets[0], str):
        return [list(map(int, row)) for row in targets]  # token ids are used exactly as given
    tok = member.tokenizer
    if member.is_encoder_decoder:
        return tok(text_target=list(targets), add_special_tokens=True)["input_ids"]
    ids = tok(list(targets), add_special_tokens=False)["input_ids"]
    if append_eos and tok.eos_token_id is not None:
        ids = [row + [tok.eos_token_id] for row in ids]
    return ids


def _pad_right(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids.to(device), mask.to(device)


@torch.no_grad()
def token_logprobs(member: Member, sources: Sequence[str], targets: Sequence[str] | Sequence[Sequence[int]],
                   append_eos: bool = True, decoder_start_token_id: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log p(y_t | x, y_<t) for each (source, target) pair; targets are texts or token-id lists.

    Returns (log_probs [N, T], mask [N, T], target ids [N, T]), right padded, on CPU.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    model, device = member.model, member.device
    target_rows = _target_ids(member, targets, append_eos)
    pad = member.tokenizer.pad_token_id if member.tokenizer.pad_token_id is not None else 0
    labels, label_mask = _pad_right(target_rows, pad, device)
    if member.is_encoder_decoder:
        start = decoder_start_token_id
        if start is None:
            start = model.generation_config.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id
        batch = member.encode_sources(sources)
        decoder_inputs = torch.cat((torch.full_like(labels[:, :1], start), labels[:, :-1]), dim=1)
        logits = model(**batch, decoder_input_ids=decoder_inputs, use_cache=False).logits
    else:
        prompts = member.tokenizer([member.prompt_template.format(text=s) for s in sources])["input_ids"]
        rows = [p + t for p, t in zip(prompts, target_rows)]
        ids, mask = _pad_right(rows, pad, device)
        logits_all = model(input_ids=ids, attention_mask=mask.long(), use_cache=False).logits
        # The target token at position p+t is predicted by the logits at p+t-1.
        starts = torch.tensor([len(p) - 1 for p in prompts], device=device)
        gather_at = (starts[:, None] + torch.arange(labels.shape[1], device=device)).clamp(max=ids.shape[1] - 1)
        logits = logits_all.gather(1, gather_at[:, :, None].expand(-1, -1, logits_all.shape[-1]))
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(2, labels[:, :, None]).squeeze(2)
    log_probs = log_probs.masked_fill(~label_mask, 0.0)
    return log_probs.cpu(), label_mask.cpu(), labels.cpu()


def sequence_logprobs(member: Member, sources: Sequence[str], targets: Sequence[str], batch_size: int | None = None,
                      append_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob and token count of each target; `batch_size` rows per forward (None: all at once)."""
    step = batch_size or max(len(sources), 1)
    sums, counts = [], []
    for i in range(0, len(sources), step):
        lp, mask, _ = token_logprobs(member, sources[i : i + step], targets[i : i + step], append_eos)
        sums.append(lp.sum(dim=1))
        counts.append(mask.sum(dim=1))
    return torch.cat(sums), torch.cat(counts)
