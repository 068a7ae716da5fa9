"""Speak demo sentences with espeak-ng and turn them into 16 kHz mono clips.

Training-time only: needs the `espeak-ng` and `sox` binaries
(`apt-get install -y espeak-ng sox`). Runtime code never calls this.

- `synthesize` speaks one sentence with a random voice, speed and pitch and adds
  light white noise at a random SNR.
- `make_train_mels` speaks many train sentences and stores their log-mel
  spectrograms (fp16, unpadded) in one .npy plus an index .json in a cache dir.
- `make_test_set` writes the held-out FLAC clips and manifest.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from demo.demo_grammar import MAX_WORDS, generate, read_tsv

SAMPLE_RATE = 16_000
VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd", "en-us-nyc"]
VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4"]
MAX_SECONDS = 5.8  # the ASR window is 6 s (n_audio_ctx=300)


def synthesize(text: str, rng: random.Random) -> np.ndarray:
    """float32 mono audio at 16 kHz of `text` in a random voice, with noise."""
    voice = rng.choice(VOICES) + rng.choice(VARIANTS)
    speed = rng.randint(140, 190)
    pitch = rng.randint(30, 70)
    tts = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True)
    raw = subprocess.run(["sox", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1",
                          "-b", "16", "-e", "signed-integer", "-"],
                         input=tts.stdout, capture_output=True, check=True).stdout
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    audio = _trim_silence(audio)
    snr_db = rng.uniform(20.0, 35.0)
    power = float(np.mean(audio**2)) + 1e-12
    noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(len(audio)).astype(np.float32)
    audio = audio + noise * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _trim_silence(audio: np.ndarray, keep: float = 0.1) -> np.ndarray:
    # espeak pads both ends; keep a little so onsets are not clipped
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if len(loud) == 0:
        return audio
    pad = int(keep * SAMPLE_RATE)
    return audio[max(0, loud[0] - pad): loud[-1] + pad]


def _clip_rng(seed: int, index: int, text: str) -> random.Random:
    return random.Random(f"{seed}-{index}-{text}")


SHARD = 1000


def make_train_mels(out_dir: Path, n_clips: int, seed: int = 0, workers: int = 3,
                    sentence_seed: int = 0) -> Path:
    """Speak `n_clips` train sentences into shards of fp16 log-mels (80 x T, concatenated in time).

    Shard k is `mels_{seed}_{k}.npy` plus `mels_{seed}_{k}.json` = {"items": [{"text", "start",
    "frames"}]}. Existing shards are kept, so an interrupted run resumes and training can start
    on the first shards while later ones are still being spoken. Returns `out_dir`.
    """
    import torch
    import whisper

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = generate("train", n_clips, seed=sentence_seed, max_words=MAX_WORDS + 2)
    texts = [en for en, _ in pairs]
    for k in range(0, (len(texts) + SHARD - 1) // SHARD):
        index_path = out_dir / f"mels_{seed}_{k}.json"
        if index_path.exists():
            continue
        shard = list(range(k * SHARD, min(len(texts), (k + 1) * SHARD)))

        def work(i: int) -> tuple[str, np.ndarray]:
            return texts[i], synthesize(texts[i], _clip_rng(seed, i, texts[i]))

        mels, items, start = [], [], 0
        with ThreadPoolExecutor(workers) as pool:
            for text, audio in pool.map(work, shard):
                if len(audio) > MAX_SECONDS * SAMPLE_RATE:
                    continue
                mel = whisper.log_mel_spectrogram(torch.from_numpy(audio), 80).numpy().astype(np.float16)
                mels.append(mel)
                items.append({"text": text, "start": start, "frames": mel.shape[1]})
                start += mel.shape[1]
        np.save(out_dir / f"mels_{seed}_{k}.npy", np.concatenate(mels, axis=1))
        index_path.write_text(json.dumps({"items": items}))  # written last: marks the shard complete
        print(f"shard {k} done ({len(items)} clips)", flush=True)
    return out_dir


def load_train_mels(out_dir: Path, seed: int = 0) -> tuple[list[dict], list[np.ndarray]]:
    """All complete shards: items (with a "shard" key) and the shard arrays (memory-mapped)."""
    items, arrays = [], []
    for index_path in sorted(Path(out_dir).glob(f"mels_{seed}_*.json"), key=lambda p: int(p.stem.split("_")[-1])):
        shard = len(arrays)
        arrays.append(np.load(index_path.with_suffix(".npy"), mmap_mode="r"))
        items += [dict(it, shard=shard) for it in json.loads(index_path.read_text())["items"]]
    return items, arrays


def make_test_set(corpus_tsv: Path = Path("assets/demo/corpus/test.tsv"),
                  out_dir: Path = Path("assets/demo/test"), n_clips: int = 64, seed: int = 1234,
                  max_words: int = 11) -> Path:
    """Write `n_clips` FLAC clips of test-split sentences plus manifest.jsonl."""
    import soundfile as sf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [p for p in read_tsv(corpus_tsv) if len(p[0].split()) <= max_words][:n_clips]
    lines = []
    for i, (en, de) in enumerate(pairs):
        audio = synthesize(en, _clip_rng(seed, i, en))
        clip_id = f"test{i:03d}-" + hashlib.sha1(en.encode()).hexdigest()[:6]
        sf.write(out_dir / f"{clip_id}.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        lines.append(json.dumps({"id": clip_id, "audio": f"{clip_id}.flac", "ref_en": en, "ref_de": de},
                                ensure_ascii=False))
    manifest = out_dir / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["train", "test"])
    parser.add_argument("--n", type=int, default=12_000)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "train":
        print(make_train_mels(Path(args.out_dir or "build/demo_audio"), args.n, args.seed))
    else:
        print(make_test_set(out_dir=Path(args.out_dir or "assets/demo/test"), n_clips=args.n))


if __name__ == "__main__":
    main()
