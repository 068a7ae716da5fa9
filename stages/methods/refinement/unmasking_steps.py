"""Masked-diffusion repair with any masked LM (LLaDA-style unmasking), as a step of the refinement loop.

    iteration 0   score every token of the text with one pass of the MLM
                  (p of the token actually there) and re-mask the least
                  confident ones: those under `confidence_threshold`, at most
                  ⌈remask_fraction · content tokens⌉ (fraction 1 = all-mask start)
    iteration s   (s = 1 … S) predict every masked position; unmask the most
                  confident ones so that ⌊K·(S−s)/S⌋ stay masked (K = masked at
                  the start): a linear schedule, empty after S steps

Special tokens ([CLS], [SEP], padding) are pinned: never masked and never
predicted. [UNK] is not pinned: an unknown word is exactly what to repair.
An item stops by the criterion when nothing is (left) masked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stages.methods.refinement.refine_loop import ItemState, refine_loop


def still_masked_after(total: int, s: int, steps: int) -> int:
    """Positions left masked after step s of `steps` (linear schedule)."""
    return (total * (steps - s)) // steps


def most_confident(confidence: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the k most confident positions among `candidates` (ties: the earlier position)."""
    keyed = confidence.masked_fill(~candidates, float("-inf"))
    order = torch.sort(keyed, descending=True, stable=True).indices[:k]
    chosen = torch.zeros_like(candidates)
    chosen[order] = True
    return chosen & candidates


@dataclass
class Canvas:
    ids: torch.Tensor  # [L] current tokens (mask id where masked)
    pinned: torch.Tensor  # [L] special positions
    masked: torch.Tensor  # [L]
    total: int  # K, masked at iteration 0


class MaskedDiffusionStep:
    def __init__(self, model, tokenizer, steps: int = 4, remask_fraction: float = 0.15,
                 confidence_threshold: float | None = None, max_length: int = 512):
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token: masked diffusion needs a masked LM's tokenizer")
        self.model, self.tok = model, tokenizer
        self.steps, self.fraction, self.threshold = steps, remask_fraction, confidence_threshold
        self.max_length = max_length
        special = set(tokenizer.all_special_ids)
        self.pin_ids = special - {tokenizer.unk_token_id}
        self.banned = torch.tensor(sorted(special), dtype=torch.long)

    @property
    def device(self) -> torch.device:
        return getattr(self.model, "device", torch.device("cpu"))

    @torch.no_grad()
    def __call__(self, states: list[ItemState], iteration: int) -> None:
        if iteration == 0:
            self._start(states)
        else:
            self._unmask(states, iteration)

    def _forward(self, canvases: list[Canvas]) -> torch.Tensor:
        """Logits [B, L, V] (float32, CPU) for a batch of canvases (right padded)."""
        width = max(len(c.ids) for c in canvases)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.full((len(canvases), width), pad, dtype=torch.long)
        attn = torch.zeros(len(canvases), width, dtype=torch.long)
        for i, c in enumerate(canvases):
            ids[i, :len(c.ids)] = c.ids
            attn[i, :len(c.ids)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device)).logits
        return logits.float().cpu()

    def _start(self, states: list[ItemState]) -> None:
        canvases = []
        for s in states:
            ids = torch.tensor(self.tok(s.input, truncation=True, max_length=self.max_length)["input_ids"])
            pinned = torch.tensor([int(t) in self.pin_ids for t in ids], dtype=torch.bool)
            canvases.append(Canvas(ids, pinned, torch.zeros_like(pinned), 0))
        probs = torch.softmax(self._forward(canvases), -1)
        for s, c, p in zip(states, canvases, probs):
            conf = p[: len(c.ids)].gather(-1, c.ids[:, None])[:, 0]  # p(token actually there | context)
            eligible = ~c.pinned
            if self.threshold is not None:
                eligible &= conf < self.threshold
            # the epsilon keeps 0.4 × 5 at 2 (float 2.0000000000000004 would round up to 3)
            k = min(int(eligible.sum()), math.ceil(self.fraction * int((~c.pinned).sum()) - 1e-9))
            c.masked = most_confident(-conf, eligible, k)  # the k least confident
            c.total = int(c.masked.sum())
            c.ids = c.ids.masked_fill(c.masked, self.tok.mask_token_id)
            s.memory = c
            s.done = c.total == 0
            s.output = s.input if s.done else self.render(c)
            content = ~c.pinned
            s.score = float(conf[content].clamp_min(1e-30).log().mean()) if content.any() else None
            s.info = {"masked": c.total, "positions": c.masked.nonzero()[:, 0].tolist()}

    def _unmask(self, states: list[ItemState], step: int) -> None:
        canvases: list[Canvas] = [s.memory for s in states]
        counts = [int(c.masked.sum()) - still_masked_after(c.total, step, self.steps) for c in canvases]
        busy = [i for i, k in enumerate(counts) if k > 0]  # when steps > K some steps unmask nothing
        logits = self._forward([canvases[i] for i in busy]) if busy else None
        for s in states:
            s.info = {"unmasked": [], "still_masked": int(s.memory.masked.sum())}
        for row, i in enumerate(busy):
            s, c = states[i], canvases[i]
            z = logits[row, : len(c.ids)]
            z[:, self.banned] = float("-inf")  # specials are never predicted; the rest renormalises
            p = torch.softmax(z, -1)
            conf, best = p.max(-1)
            chosen = most_confident(conf, c.masked, counts[i])
            c.ids = torch.where(chosen, best, c.ids)
            c.masked &= ~chosen
            s.output = self.render(c)
            filled = ~c.pinned & ~c.masked
            s.score = float(p.gather(-1, c.ids[:, None])[:, 0][filled].clamp_min(1e-30).log().mean())
            s.info = {"unmasked": chosen.nonzero()[:, 0].tolist(), "still_masked": int(c.masked.sum())}
        for s in states:
            s.done = not bool(s.memory.masked.any())

    def render(self, c: Canvas) -> str:
        """The text without pinned tokens; [MASK] stays visible while a position is masked."""
        return self.tok.decode(c.ids[~c.pinned].tolist(), skip_special_tokens=False,
                               clean_up_tokenization_spaces=True).strip()


def masked_diffusion(model, tokenizer, texts: list[str], steps: int = 4, remask_fraction: float = 0.15,
                     confidence_threshold: float | None = None) -> list[ItemState]:
    step = MaskedDiffusionStep(model, tokenizer, steps, remask_fraction, confidence_threshold)
    return refine_loop(texts, step, steps + 1)
