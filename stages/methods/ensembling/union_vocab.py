"""Cross-vocabulary ensembling through a union vocabulary (GaC-style), greedy only.

Supported scope, precisely:

- Search: greedy only, one source at a time (members consume different
  numbers of tokens per step, so rows cannot share a batch). Linear mixing
  only: p_U(u) = sum_m w_m p_m(u), weights >= 0, normalised to sum 1.
- Token surfaces: every member token is mapped to the text it contributes.
  Metaspace / sentencepiece vocabularies ("▁" = space) and GPT-2-style byte
  level vocabularies (decoded through the byte table) are understood;
  `scheme=` picks one explicitly. All members' EOS tokens map to one union
  EOS entry. Other special tokens, and byte-level tokens that are not
  complete UTF-8 text on their own, are left out of the union: their mass is
  dropped (`renormalize=True` rescales each member's remaining mass to 1).
- Union distribution: a member gives a union token the summed probability of
  its own tokens with that surface, and zero if it has no such token (as in
  GaC: a member's multi-token spellings of a surface are not marginalised).
- Feeding the choice back (`feed=`):
  "piece" (default): a member that has the chosen surface as one token gets
  that token; otherwise it gets a longest-match split of the surface over its
  own surfaces (its UNK for a character it cannot spell).
  "retokenize": a member re-tokenises the whole generated text with its own
  tokenizer; where that differs from the tokens it was fed, it drops its KV
  cache and recomputes from the prefix (a rare event), so every member always
  conditions on its own canonical tokenisation. If the tokenizer's output does
  not spell the text back exactly, that step falls back to "piece".
  Causal members re-tokenise the continuation only; the prompt/continuation
  border stays a token border.
- Output: the concatenated surfaces, stripped of surrounding whitespace.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import torch

from stages.methods.ensembling.ensemble_members import Member
from stages.methods.ensembling.member_sessions import _cache_argument, _returned_cache

EOS = "\x00<eos>"  # union entry shared by all members' EOS tokens


class VocabMember(Protocol):
    """What union decoding needs from a member (HFVocabMember wraps a transformers one)."""

    surfaces: list[str | None]  # per member token id; None = not in the union
    eos_ids: set[int]
    unk_id: int | None
    fed: list[int]

    def start(self, source: str) -> None: ...
    def feed(self, ids: Sequence[int]) -> None: ...
    def rewind_to(self, n: int) -> None: ...
    def log_probs(self) -> torch.Tensor: ...  # [V_m], next-token log-probs after everything fed
    def tokenize(self, text: str) -> list[int] | None: ...  # own tokenisation of a continuation


def _byte_table() -> dict[str, int]:
    """Inverse of GPT-2's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


_BYTES = _byte_table()


def detect_scheme(tokenizer) -> Literal["byte_level", "metaspace"]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = repr(getattr(backend, "decoder", None)) + repr(getattr(backend, "pre_tokenizer", None))
    return "byte_level" if "ByteLevel" in parts else "metaspace"


def token_surfaces(tokenizer, size: int, scheme: Literal["auto", "byte_level", "metaspace"] = "auto"
                   ) -> list[str | None]:
    """The text each token id contributes (EOS -> the union EOS marker; None = left out)."""
    scheme = detect_scheme(tokenizer) if scheme == "auto" else scheme
    special = set(tokenizer.all_special_ids)
    eos = tokenizer.eos_token_id
    n_known = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(size, n_known))))
    out: list[str | None] = []
    for i in range(size):
        token = tokens[i] if i < n_known else None
        if i == eos:
            out.append(EOS)
        elif token is None or i in special:
            out.append(None)
        elif scheme == "byte_level":
            try:
                out.append(bytes(_BYTES[c] for c in token).decode("utf-8"))
            except (KeyError, UnicodeDecodeError):
                out.append(None)
        else:
            out.append(token.replace("▁", " ") if not (token.startswith("<") and token.endswith(">")) else None)
    return out


def split_piece(piece: str, surface_ids: dict[str, int], unk_id: int | None) -> list[int]:
    """Longest-match split of a surface over a member's own surfaces."""
    ids, i = [], 0
    longest = max((len(s) for s in surface_ids), default=1)
    while i < len(piece):
        for j in range(min(len(piece), i + longest), i, -1):
            if piece[i:j] in surface_ids:
                ids.append(surface_ids[piece[i:j]])
                i = j
                break
        else:
            if unk_id is None:
                raise ValueError(f"cannot spell {piece[i]!r} with this member's vocabulary and it has no UNK token")
            ids.append(unk_id)
            i += 1
    return ids


@dataclass
class UnionVocab:
    """Union of the members' surfaces; `index[m][i]` is the union id of member m's token i (-1: left out)."""

    entries: list[str]
    index: list[torch.Tensor]
    surface_ids: list[dict[str, int]] = field(default_factory=list)

    @classmethod
    def build(cls, surface_lists: Sequence[Sequence[str | None]]) -> "UnionVocab":
        entries: dict[str, int] = {EOS: 0}
        index, surface_ids = [], []
        for surfaces in surface_lists:
            own: dict[str, int] = {}
            ids = []
            for i, s in enumerate(surfaces):
                if not s:
                    ids.append(-1)
                    continue
                ids.append(entries.setdefault(s, len(entries)))
                own.setdefault(s, i)
            index.append(torch.tensor(ids, dtype=torch.long))
            surface_ids.append(own)
        return cls(list(entries), index, surface_ids)

    def to_union(self, m: int, log_probs: torch.Tensor, renormalize: bool = False) -> torch.Tensor:
        """Member m's distribution over its vocab -> probabilities over the union."""
        probs = log_probs.exp().cpu()
        keep = self.index[m] >= 0
        out = torch.zeros(len(self.entries), dtype=probs.dtype)
        out.index_add_(0, self.index[m][keep], probs[: len(keep)][keep])
        total = out.sum()
        return out / total if renormalize and total > 0 else out


@dataclass
class UnionResult:
    text: str
    pieces: list[str]  # the chosen union surfaces (EOS excluded)
    logprob: float  # summed log of the mixed union probability of each choice
    fed: list[list[int]]  # the token ids each member was fed


def union_generate(members: Sequence[VocabMember], source: str, weights: Sequence[float] | None = None,
                   max_new_tokens: int = 64, min_new_tokens: int = 0, feed: Literal["piece", "retokenize"] = "piece",
                   renormalize: bool = False) -> UnionResult:
    """Greedy decoding of one source with members that may have different vocabularies."""
    w = torch.ones(len(members)) if weights is None else torch.tensor(list(weights), dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("union-vocabulary mixing is linear: weights must be >= 0 with a positive sum")
    w = w / w.sum()
    union = UnionVocab.build([m.surfaces for m in members])
    for m in members:
        m.start(source)
    pieces: list[str] = []
    total = 0.0
    for step in range(max_new_tokens):
        mixed = sum(float(w[i]) * union.to_union(i, m.log_probs().double(), renormalize)
                    for i, m in enumerate(members))
        if step < min_new_tokens:
            mixed[0] = 0.0
            mixed = mixed / mixed.sum()
        choice = int(torch.argmax(mixed))
        total += float(torch.log(mixed[choice]))
        if choice == 0:
            break
        pieces.append(union.entries[choice])
        text = "".join(pieces)
        for i, m in enumerate(members):
            _feed_member(m, union.entries[choice], text, union.surface_ids[i], feed)
    return UnionResult("".join(pieces).strip(), pieces, total, [list(m.fed) for m in members])


def _feed_member(member: VocabMember, piece: str, text: str, surface_ids: dict[str, int], mode: str) -> None:
    if mode == "retokenize":
        ids = member.tokenize(text)
        if ids is not None:
            common = 0
            while common < min(len(ids), len(member.fed)) and ids[common] == member.fed[common]:
                common += 1
            member.rewind_to(common)
            member.feed(ids[common:])
            return
    member.feed([surface_ids[piece]] if piece in surface_ids else split_piece(piece, surface_ids, member.unk_id))


class HFVocabMember:
    """A transformers member for union decoding: batch of one, own KV cache, lazy forward."""

    def __init__(self, member: Member, scheme: Literal["auto", "byte_level", "metaspace"] = "auto"):
        self.member = member
        self.model = member.model
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.surfaces = token_surfaces(member.tokenizer, vocab_size, scheme)
        self.eos_ids = {member.tokenizer.eos_token_id}
        self.unk_id = member.tokenizer.unk_token_id
        self._cache_arg = _cache_argument(self.model)
        self._positions = "position_ids" in inspect.signature(type(self.model).forward).parameters
        self.calls = 0

    def start(self, source: str) -> None:
        batch = self.member.encode_sources([source])
        if self.member.is_encoder_decoder:
            with torch.no_grad():
                self.encoder_outputs = self.model.get_encoder()(**batch, return_dict=True)
            self.source_mask = batch["attention_mask"]
            start = self.model.generation_config.decoder_start_token_id
            self.prefix = [start if start is not None else self.model.config.decoder_start_token_id]
        else:
            self.prefix = batch["input_ids"][0].tolist()
        self.fed: list[int] = []
        self._reset_cache()

    def _reset_cache(self) -> None:
        self.cache, self.cached, self._last = None, 0, None  # `cached` counts prefix + fed tokens in the cache

    def feed(self, ids: Sequence[int]) -> None:
        self.fed.extend(int(i) for i in ids)

    def rewind_to(self, n: int) -> None:
        if n < len(self.fed):
            self.fed = self.fed[:n]
            if self.cached > len(self.prefix) + n:
                self._reset_cache()  # recompute rather than crop: cache cropping APIs differ across versions

    @torch.no_grad()
    def log_probs(self) -> torch.Tensor:
        sequence = self.prefix + self.fed
        if self._last is not None and self.cached == len(sequence):
            return self._last
        new = torch.tensor([sequence[self.cached :]], dtype=torch.long, device=self.member.device)
        kwargs = {self._cache_arg: self.cache, "use_cache": True}
        if self.member.is_encoder_decoder:
            kwargs.update(encoder_outputs=self.encoder_outputs, attention_mask=self.source_mask, decoder_input_ids=new)
        else:
            kwargs["input_ids"] = new
            if self._positions:
                kwargs["position_ids"] = torch.arange(self.cached, len(sequence), device=new.device)[None, :]
        outputs = self.model(**kwargs)
        self.calls += 1
        self.cache, self.cached = _returned_cache(outputs), len(sequence)
        self._last = torch.log_softmax(outputs.logits[0, -1].float(), dim=-1).cpu()
        return self._last

    def tokenize(self, text: str) -> list[int] | None:
        tok = self.member.tokenizer
        # Metaspace tokenizers add the leading space themselves: try the text as is, then without it.
        for candidate in (text, text[1:] if text.startswith(" ") else None):
            if candidate is None:
                continue
            if self.member.is_encoder_decoder:
                ids = tok(text_target=candidate, add_special_tokens=False)["input_ids"]
            else:
                ids = tok(candidate, add_special_tokens=False)["input_ids"]
            if all(i < len(self.surfaces) and self.surfaces[i] for i in ids) and \
                    "".join(self.surfaces[i] for i in ids) == text:
                return ids
        return None


def union_generate_members(members: Sequence[Member], sources: Sequence[str], weights: Sequence[float] | None = None,
                           scheme: Literal["auto", "byte_level", "metaspace"] = "auto", **kwargs) -> list[UnionResult]:
    """Convenience: wrap transformers members and decode each source in turn."""
    wrapped = [HFVocabMember(m, scheme) for m in members]
    return [union_generate(wrapped, s, weights, **kwargs) for s in sources]
