"""Train a tiny whisper-architecture English ASR model from scratch on espeak speech.

The result is a plain openai-whisper checkpoint (`dims` + fp16 `model_state_dict`)
that `whisper.load_model(path)` and `whisper.decode` use unchanged.

Two tricks keep CPU training cheap without changing the inference model:
- Reduced softmax. Only ~700 of the 51864 GPT-2 tokens ever occur. All other
  rows of the (tied) token embedding share one trained vector `u`; their logits
  are then identical, so the full-vocabulary softmax equals a softmax over the
  used tokens plus one column `u.h + log(n_unused)`. At save time every unused
  row is set to `u`, which makes the saved model's full softmax match training.
- Cropped audio context. The encoder runs on each batch's longest clip plus some
  random padding (sometimes the full 8 s window), using the first T rows of the
  sinusoidal positions. Padding is filled as whisper's own padding would look
  (0 after mel padding, or log-mel floor after audio padding), picked at random.
An auxiliary character-level CTC head on the encoder (dropped at save) speeds up alignment.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from whisper.model import ModelDimensions, Whisper

from demo.demo_grammar import generate
from stages.training.train_eval import wer
from stages.training.train_loop import LoopConfig, Trainee, fit

N_MELS = 80
# n_audio_ctx=300: a 6 s window (600 mel frames); the demo's sentences last 1-5 s.
DEFAULT_DIMS = dict(n_mels=N_MELS, n_audio_ctx=300, n_audio_state=128, n_audio_head=4, n_audio_layer=3,
                    n_vocab=51864, n_text_ctx=64, n_text_state=128, n_text_head=4, n_text_layer=2)


def tokenizer():
    return whisper.tokenizer.get_tokenizer(multilingual=False)


def token_layout(text: str) -> list[int]:
    """SOT, no-timestamps, text tokens, EOT: exactly what DecodingTask predicts after its prefix."""
    tok = tokenizer()
    return [*tok.sot_sequence_including_notimestamps, *tok.encode(" " + text.strip()), tok.eot]


class TrainableWhisper(torch.nn.Module):
    """A Whisper model plus a reduced, tied output vocabulary and a CTC head."""

    def __init__(self, dims: ModelDimensions, used_tokens: list[int]):
        super().__init__()
        self.whisper = Whisper(dims)
        self.used = torch.tensor(used_tokens)
        self.n_unused = dims.n_vocab - len(used_tokens)
        self.emb = torch.nn.Parameter(torch.randn(len(used_tokens), dims.n_text_state) * 0.02)
        self.unused = torch.nn.Parameter(torch.zeros(dims.n_text_state))
        self.ctc = torch.nn.Linear(dims.n_audio_state, len(CTC_CHARS) + 1)  # characters; last = blank
        self.whisper.decoder.token_embedding.weight.requires_grad_(False)
        # whisper leaves the decoder positions as torch.empty (checkpoints fill them)
        torch.nn.init.normal_(self.whisper.decoder.positional_embedding, std=0.02)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        enc = self.whisper.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.positional_embedding[: x.shape[1]]
        for block in enc.blocks:
            x = block(x)
        return enc.ln_post(x)

    def decode_logits(self, small_ids: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        dec = self.whisper.decoder
        x = self.emb[small_ids] + dec.positional_embedding[: small_ids.shape[1]]
        for block in dec.blocks:
            x = block(x, audio, mask=dec.mask)
        x = dec.ln(x)
        logits = x @ self.emb.T
        other = x @ self.unused + math.log(self.n_unused)
        return torch.cat([logits, other.unsqueeze(-1)], dim=-1)

    def load_checkpoint(self, path: Path) -> None:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert ModelDimensions(**checkpoint["dims"]) == self.whisper.dims, "dims differ from the checkpoint"
        self.whisper.load_state_dict({k: v.float() for k, v in checkpoint["model_state_dict"].items()})
        table = self.whisper.decoder.token_embedding.weight.data
        self.emb.data.copy_(table[self.used])
        unused = sorted(set(range(table.shape[0])) - set(self.used.tolist()))
        self.unused.data.copy_(table[unused[0]])

    def export(self) -> Whisper:
        """The inference model: unused embedding rows all equal `unused`."""
        full = self.unused.detach().expand_as(self.whisper.decoder.token_embedding.weight).clone()
        full[self.used] = self.emb.detach()
        self.whisper.decoder.token_embedding.weight.data.copy_(full)
        return self.whisper


CTC_CHARS = " abcdefghijklmnopqrstuvwxyz'"


def ctc_target(text: str) -> list[int]:
    """Characters of the lowercased text for the auxiliary CTC loss (easier to align than BPE)."""
    return [CTC_CHARS.index(c) for c in " ".join(text.lower().split()) if c in CTC_CHARS]


def _spec_augment(mel: torch.Tensor, frames: int, rng: random.Random) -> None:
    for _ in range(2):
        w = rng.randint(0, 10)
        f0 = rng.randint(0, N_MELS - w)
        mel[f0:f0 + w, :frames] = mel[:, :frames].mean()
    for _ in range(2):
        w = rng.randint(0, min(12, frames // 10))
        t0 = rng.randint(0, max(0, frames - w))
        mel[:, t0:t0 + w] = mel[:, :frames].mean()


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for g in range(0, len(order), batch_size * 50):  # sort inside groups: similar lengths, less padding
        group = sorted(order[g:g + batch_size * 50], key=lambda i: lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(arrays, items, idx, token_lists, to_small, window, rng, augment):
    frames = [items[i]["frames"] for i in idx]
    longest = max(frames)
    if rng.random() < 0.15:
        length = window
    else:
        length = min(window, longest + rng.randint(0, 60))
    length += length % 2
    batch = torch.zeros(len(idx), N_MELS, length)
    for row, i in enumerate(idx):
        start, n = items[i]["start"], min(items[i]["frames"], window)
        mel = torch.from_numpy(arrays[items[i]["shard"]][:, start:start + n].astype(np.float32))
        batch[row, :, :n] = mel
        if rng.random() < 0.5:
            batch[row, :, n:] = mel.max() - 2.0  # audio padded with zeros before the mel
        if augment:
            _spec_augment(batch[row], n, rng)
    toks = [token_lists[i] for i in idx]
    width = max(len(t) for t in toks)
    ids = torch.zeros(len(idx), width, dtype=torch.long)
    tgt = torch.full((len(idx), width), -100, dtype=torch.long)
    for row, t in enumerate(toks):
        small = [to_small[x] for x in t]
        ids[row, :len(t)] = torch.tensor(small)
        tgt[row, :len(t) - 1] = torch.tensor(small[1:])
    tgt[:, 0] = -100  # position 0 predicts no-timestamps, which decode always supplies
    return batch, ids, tgt, [len(t) for t in toks]


def used_token_ids(texts: list[str]) -> list[int]:
    tok = tokenizer()
    used = {tok.eot, tok.sot, tok.no_timestamps}
    for text in texts:
        used.update(tok.encode(" " + text.strip()))
    return sorted(used)


@torch.no_grad()
def word_error_rate(model: Whisper, audios: list[np.ndarray], refs: list[str], batch_size: int = 32) -> float:
    """A fraction (not percent), after the tree's one normaliser."""
    return wer(transcribe_batch(model, audios, batch_size), refs) / 100


@torch.no_grad()
def transcribe_batch(model: Whisper, audios: list[np.ndarray], batch_size: int = 32) -> list[str]:
    """Greedy whisper.decode on stacked mels, exactly as runtime code would call it."""
    window = 2 * model.dims.n_audio_ctx
    out = []
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    for b in range(0, len(audios), batch_size):
        mels = [whisper.pad_or_trim(whisper.log_mel_spectrogram(torch.from_numpy(a), model.dims.n_mels), window)
                for a in audios[b:b + batch_size]]
        results = whisper.decode(model, torch.stack(mels).to(model.device), options)
        out += [r.text for r in results]
    return out


def save_checkpoint(model: Whisper, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"dims": asdict(model.dims), "model_state_dict": state}, path)


def train(audio_dir: Path, out_path: Path = Path("assets/models/asr-tiny/model.pt"), steps: int = 3000,
          batch_size: int = 32, lr: float = 2e-3, seed: int = 0, dims: dict | None = None,
          n_dev: int = 64, eval_every: int = 500, threads: int = 2, ctc_weight: float = 0.5,
          log_path: Path | None = None, min_clips: int = 1000, max_minutes: float = 1e9,
          warmup: int = 150, init_from: Path | None = None) -> dict:
    """Train on the spoken shards in `audio_dir` (waits for `min_clips`, then takes the complete shards)
    with the training layer's loop; the exported checkpoint is saved at each evaluation that is the best so far."""
    from demo.make_demo_audio import load_train_mels, synthesize

    torch.manual_seed(seed)
    while len(load_train_mels(audio_dir)[0]) < min_clips:
        time.sleep(10)
    dims_obj = ModelDimensions(**(dims or DEFAULT_DIMS))
    window = 2 * dims_obj.n_audio_ctx
    items, arrays = load_train_mels(audio_dir)
    items = [it for it in items if it["frames"] <= window]
    token_lists = [token_layout(it["text"]) for it in items]
    assert max(len(t) for t in token_lists) <= dims_obj.n_text_ctx // 2, "raise n_text_ctx"
    # length-bucketed batches are the loop's examples (one per step, reshuffled every epoch)
    buckets = _batches([it["frames"] for it in items], batch_size, random.Random(seed))
    print(f"{len(items)} clips in {len(buckets)} batches", flush=True)

    # the output vocabulary: every token the grammar can produce (train-split text only)
    used = used_token_ids([en for en, _ in generate("train", 30000, seed=99)])
    to_small = {t: i for i, t in enumerate(used)}

    dev_pairs = generate("dev", n_dev, seed=7)
    dev_audio = [synthesize(en, random.Random(f"dev-{i}")) for i, (en, _) in enumerate(dev_pairs)]
    dev_refs = [en for en, _ in dev_pairs]

    model = TrainableWhisper(dims_obj, used)
    if init_from is not None:  # continue from a saved whisper checkpoint (optimizer state starts fresh)
        model.load_checkpoint(Path(init_from))
    blank = len(CTC_CHARS)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a") if log_path else None
    last = {}
    best_wer = float("inf")
    t0 = time.time()

    def loss(m, batch: list[list[int]], step: int) -> torch.Tensor:
        [idx] = batch
        rng = random.Random(f"{seed}:{step}")  # padding and SpecAugment draws per step
        mel, ids, tgt, _ = _collate(arrays, items, idx, token_lists, to_small, window, rng, augment=True)
        audio = m.encode(mel)
        logits = m.decode_logits(ids, audio)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
        # CTC over the text tokens only (no special tokens)
        ctc_logp = m.ctc(audio).log_softmax(-1).transpose(0, 1)
        ctc_targets = [torch.tensor(ctc_target(items[i]["text"])) for i in idx]
        ctc = F.ctc_loss(ctc_logp, torch.cat(ctc_targets), torch.full((len(idx),), audio.shape[1]),
                         torch.tensor([len(t) for t in ctc_targets]), blank=blank, zero_infinity=True)
        last.update(ce=ce.item(), ctc=ctc.item())
        return ce + ctc_weight * ctc

    def write(msg: str) -> None:
        print(msg, flush=True)
        if log:
            log.write(msg + "\n")
            log.flush()

    def report(step: int, total: int, value: float) -> None:
        if step % 25 == 0:
            write(f"step {step} ce {last['ce']:.3f} ctc {last['ctc']:.3f} {time.time() - t0:.0f}s")

    def evaluate(m) -> dict:
        nonlocal best_wer
        inference = m.export()
        wer = word_error_rate(inference, dev_audio, dev_refs)
        if wer <= best_wer:  # keep the best dev checkpoint
            best_wer = wer
            save_checkpoint(inference, out_path)
        write(f"EVAL dev WER {wer:.4f} (best {best_wer:.4f} in {out_path})")
        return {"dev_wer": wer, "seconds": time.time() - t0}

    loop = LoopConfig(steps=steps, batch_size=1, lr=lr, warmup=max(1, min(warmup, steps // 10)), min_lr_ratio=0.05,
                      eval_every=eval_every, max_minutes=max_minutes if max_minutes < 1e9 else None, seed=seed,
                      threads=threads, resume=False)
    # the best checkpoint is written by the eval hook; the loop's own final save has nothing to add
    run_dir = Path(log_path).parent / "asr-training" if log_path else Path(out_path).parent  # train.json
    trained = fit(Trainee(model, loss, save=lambda m, folder: None, evaluate=evaluate), buckets, loop, run_dir,
                  on_step=report)
    return {"history": trained.evals, "seconds": time.time() - t0, "path": str(out_path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--audio-dir", default="build/demo_audio", help="shards from make_demo_audio")
    parser.add_argument("--n-clips", type=int, default=16000, help="with --make-audio")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", default="assets/models/asr-tiny/model.pt")
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--max-minutes", type=float, default=1e9)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--ctc-weight", type=float, default=0.5)
    parser.add_argument("--init-from", default=None, help="continue from this whisper checkpoint")
    parser.add_argument("--threads", type=int, default=2, help="1 is faster on an oversubscribed CPU")
    parser.add_argument("--make-audio", action="store_true", help="speak the shards first")
    args = parser.parse_args()
    if args.make_audio:
        from demo.make_demo_audio import make_train_mels

        make_train_mels(Path(args.audio_dir), args.n_clips)
    result = train(Path(args.audio_dir), Path(args.out), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   eval_every=args.eval_every, max_minutes=args.max_minutes, threads=args.threads, warmup=args.warmup, ctc_weight=args.ctc_weight,
                   init_from=Path(args.init_from) if args.init_from else None,
                   log_path=Path("build/logs/asr_train.log"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
