"""Word-level knowledge distillation from an ensemble teacher.

    teacher = EnsembleTeacher(members, weights=None, combiner="linear", temperature=2.0)
    out = word_kd_loss(student, teacher, batch, alpha=0.5)   # batch: input_ids, attention_mask, labels
    out.loss.backward()

The teacher's distribution is the one ensemble decoding would use: with
teacher forcing on the gold target, every member with a non-zero weight runs
one forward pass over the whole batch (eval mode, no gradients), and its
per-position log-probs go through the same combiner as in `decoding.py`
(linear or log-linear, with the ensemble weights). Temperature is applied to
the combined distribution, q_T ∝ p_ens^(1/T): the ensemble's log-probs play
the part a single teacher's logits play, so a one-member teacher at T gives
exactly softmax(z/T).

    loss = α · T² · KL(q_teacher_T ‖ q_student_T) + (1 − α) · CE(student, gold)

Both terms are means over the target positions whose label is not
`ignore_index` (padding). T² keeps the size of the KD gradient roughly
independent of T, so α means the same thing at every temperature.
Sequence-level KD needs no loss of its own: decode the training sources
with the ensemble (`ensemble_generate`) and train on those outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from stages.methods.ensembling.combiners import Combiner, make_combiner
from stages.methods.ensembling.ensemble_decoding import weight_matrix
from stages.methods.ensembling.ensemble_members import Member, check_shared_vocabulary


@dataclass
class KDLoss:
    loss: torch.Tensor  # what to backpropagate
    kl: torch.Tensor  # mean per-token KL(teacher_T || student_T), without the T² factor
    ce: torch.Tensor  # mean per-token hard-label cross-entropy (at T = 1)
    tokens: int  # target positions that counted


def decoder_inputs_from_labels(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int,
                               ignore_index: int = -100) -> torch.Tensor:
    """Teacher forcing: the decoder sees the start token, then the gold target shifted right by one."""
    inputs = labels.new_full(labels.shape, pad_token_id)
    inputs[:, 0] = decoder_start_token_id
    inputs[:, 1:] = labels[:, :-1]
    return inputs.masked_fill(inputs == ignore_index, pad_token_id)


def kd_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor,
            alpha: float = 0.5, temperature: float = 1.0, label_smoothing: float = 0.0,
            ignore_index: int = -100) -> KDLoss:
    """The mixed loss from student logits [B, L, V], teacher log-probs at T [B, L, V] and labels [B, L]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_log_probs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher log-probs "
                         f"{tuple(teacher_log_probs.shape)} differ: do student and teacher share a vocabulary?")
    keep = labels != ignore_index
    n = int(keep.sum())
    if n == 0:
        raise ValueError("no target token to learn from: every label is ignore_index")
    logits = student_logits[keep].float()  # [N, V]: padding never enters either term
    teacher = teacher_log_probs[keep].float().to(logits.device)
    student_t = F.log_softmax(logits / temperature, dim=-1)
    p = teacher.exp()
    # p log p is 0 where the teacher gives a token no mass (log-linear can), not NaN.
    per_token = torch.where(p > 0, p * (teacher - student_t), torch.zeros_like(p)).sum(dim=-1)
    kl = per_token.mean()
    ce = F.cross_entropy(logits, labels[keep].to(logits.device), label_smoothing=label_smoothing)
    loss = alpha * temperature ** 2 * kl + (1.0 - alpha) * ce
    return KDLoss(loss=loss, kl=kl, ce=ce, tokens=n)


class EnsembleTeacher:
    """Frozen members + weights + combiner: per-position combined log-probs of a gold target at T."""

    def __init__(self, members: Sequence[Member], weights=None, combiner: str | Combiner = "linear",
                 temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.members = list(members)
        if not self.members:
            raise ValueError("a teacher needs at least one member")
        if not all(m.is_encoder_decoder for m in self.members):
            raise ValueError("teacher forcing here is written for seq2seq members (source -> encoder)")
        check_shared_vocabulary(self.members)
        self.weights = weights
        self.combiner = combiner
        self.temperature = temperature
        for m in self.members:
            m.model.eval()  # no dropout in the teacher; log_probs runs without gradients

    @property
    def tokenizer(self):
        return self.members[0].tokenizer

    @torch.no_grad()
    def log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
                  device: torch.device | str | None = None) -> torch.Tensor:
        """[B, L, V] log-probs of the tempered ensemble distribution at each target position."""
        batch, length = decoder_input_ids.shape
        w = weight_matrix(self.weights, batch, len(self.members))  # [B, M]
        active = [m for m in range(len(self.members)) if bool((w[:, m] != 0).any())]
        if not active:
            raise ValueError("every teacher member has weight zero")
        device = torch.device(device) if device is not None else self.members[active[0]].device
        per_member = []
        for m in active:
            member = self.members[m]
            logits = member.model(input_ids=input_ids.to(member.device),
                                  attention_mask=attention_mask.to(member.device),
                                  decoder_input_ids=decoder_input_ids.to(member.device), return_dict=True).logits
            per_member.append(torch.log_softmax(logits.float(), dim=-1).to(device).reshape(batch * length, -1))
        sizes = {lp.shape[-1] for lp in per_member}
        if len(sizes) != 1:
            raise ValueError(f"teacher members disagree on the output vocabulary size: {sorted(sizes)}")
        # One row per (input, position), each with its input's weights: the combiner is the decoder's own.
        row_weights = w[:, active].repeat_interleave(length, dim=0).to(device)
        combined = make_combiner(self.combiner)(torch.stack(per_member), row_weights)
        # Renormalising also covers a combiner that returns unnormalised scores (Marian-style log-linear).
        combined = torch.log_softmax(combined / self.temperature, dim=-1)
        return combined.reshape(batch, length, -1)


def word_kd_loss(student, teacher: EnsembleTeacher, batch: dict, alpha: float = 0.5,
                 label_smoothing: float = 0.0, ignore_index: int = -100) -> KDLoss:
    """One training step's loss for a seq2seq `student` (a transformers model) on a tokenised batch.

    `batch` holds input_ids, attention_mask and labels (padding already set to
    `ignore_index`). The student and every teacher member see the same
    decoder inputs, built from the labels with the student's start/pad ids.
    """
    config = student.config
    decoder_input_ids = decoder_inputs_from_labels(batch["labels"], config.decoder_start_token_id,
                                                   config.pad_token_id, ignore_index)
    student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             decoder_input_ids=decoder_input_ids, return_dict=True).logits
    teacher_lp = teacher.log_probs(batch["input_ids"], batch["attention_mask"], decoder_input_ids,
                                   device=student_logits.device)
    return kd_loss(student_logits, teacher_lp, batch["labels"], alpha=alpha, temperature=teacher.temperature,
                   label_smoothing=label_smoothing, ignore_index=ignore_index)
