"""The long demo file: held-out demo clips joined with pauses, one item with whole-file references.

    python -m demo.make_demo_long        # writes assets/demo/long/{long12.flac, manifest.jsonl}

The demo ASR transcribes one sentence per chunk, so the file exercises segments, per-segment MT and
subtitles with the demo models; `clips` in the manifest lists the source clips in order, which lets
experiments compare the long-form translation with the same clips translated one by one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "assets" / "demo" / "test"
LONG = ROOT / "assets" / "demo" / "long"
RATE = 16_000


def build_demo_long(out_dir: Path = LONG, n_clips: int = 12, seed: int = 0) -> Path:
    import soundfile as sf

    rows = [json.loads(line) for line in (TEST / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    rows = rows[:n_clips]
    rng = np.random.default_rng(seed)
    parts = []
    for row in rows:
        wave, rate = sf.read(TEST / row["audio"], dtype="float32")
        assert rate == RATE, f"{row['audio']}: {rate} Hz"
        parts += [wave, np.zeros(int(RATE * rng.uniform(0.6, 1.0)), np.float32)]  # a natural pause
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"long{len(rows)}"
    sf.write(out_dir / f"{name}.flac", np.concatenate(parts), RATE)
    item = {"id": name, "audio": f"{name}.flac", "ref_en": " ".join(r["ref_en"] for r in rows),
            "ref_de": " ".join(r["ref_de"] for r in rows), "clips": [r["id"] for r in rows]}
    (out_dir / "manifest.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\n", encoding="utf-8")
    return out_dir / f"{name}.flac"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=LONG)
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args()
    print(build_demo_long(args.out, args.clips))
