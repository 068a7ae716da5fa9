"""Long-form English test audio: minutes-long files with reference transcripts and sentence times.

Built on demand into a cache folder (never committed), deterministic for a seed:
the same seed gives the same sentences, voices, pauses and noise, and the
synthesizers themselves are deterministic.

- Several voices: espeak-ng (accents, variants, speeds), flite and festival.
  Some files are dialogues of two voices taking turns.
- Natural pauses of 0.3-2 s between sentences; background noise at 10-20 dB
  SNR on every third file.
- Two kinds of text: the demo grammar's held-out English (each sentence has its
  German reference, so the demo MT can be scored on it) and a varied prose of
  longer sentences (English only).
- Per file: FILE.flac, FILE.json (whole-file reference, per-sentence references
  with start/end seconds, voices, noise) and a manifest.jsonl row in the
  demo's format (id, audio, ref_en, ref_de when every sentence has one).

Needs the `espeak-ng`, `flite` and `festival` binaries:
`apt-get install -y espeak-ng flite festival`.

    python -m demo.make_longform_audio --files 12 --seed 0     # prints the folder
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from demo.demo_grammar import MAX_WORDS, generate
from demo.make_demo_audio import _trim_silence  # the same trim as the demo clips

SAMPLE_RATE = 16_000
BUILD_VERSION = 1  # bump when a change alters the audio a seed gives
PAUSE_SECONDS = (0.3, 2.0)
NOISE_SNR_DB = (10.0, 20.0)


@dataclasses.dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng", "flite" or "festival"
    name: str
    words_per_minute: int = 0  # espeak-ng only; 0 keeps the engine's rate

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}" + (f"@{self.words_per_minute}" if self.words_per_minute else "")

    def command(self, text: str, wav: str) -> list[str]:
        """argv that writes `text` spoken by this voice to `wav` (festival: see `speak_many`)."""
        if self.engine == "espeak-ng":
            return ["espeak-ng", "-v", self.name, "-s", str(self.words_per_minute or 165), "-w", wav, text]
        if self.engine == "flite":
            return ["flite", "-voice", self.name, "-t", text, "-o", wav]
        raise ValueError(f"no one-sentence command for speech engine {self.engine!r}")

    @property
    def binary(self) -> str:
        return self.engine


VOICES = [
    Voice("espeak-ng", "en-us", 165), Voice("flite", "slt"), Voice("espeak-ng", "en-gb+f3", 150),
    Voice("festival", "kal_diphone"), Voice("espeak-ng", "en-gb-x-rp+m3", 175), Voice("flite", "rms"),
    Voice("espeak-ng", "en-us-nyc+f2", 160), Voice("flite", "awb"), Voice("espeak-ng", "en-029+m1", 155),
    Voice("flite", "kal16"), Voice("espeak-ng", "en-gb-scotland+f4", 145),
]

# A varied text of our own: longer sentences, numbers as words, names, questions.
PROSE = [
    "Good morning, and thank you all for coming to the second lecture of the autumn term.",
    "Today we look at how rivers shape the land over thousands of years.",
    "A river carries sand and small stones downstream, and drops them where the water slows down.",
    "Where the current is fast, the banks wear away, and the valley slowly grows deeper.",
    "Has anyone here visited the delta in the south of the country?",
    "It is flat, green and wet, and the farmers there plant rice twice a year.",
    "The old town was built on a hill, because the lowland flooded almost every spring.",
    "In nineteen fifty three a great storm broke the dikes, and the sea came in at night.",
    "After that disaster the government spent thirty years building new barriers.",
    "Let me show you a map of the coast before and after the works.",
    "You can see that the islands in the north are now joined by long roads.",
    "Some people say the barriers changed the fish and the birds of the area.",
    "That is a fair question, and the answer depends on whom you ask.",
    "Biologists counted fewer oysters, but more seals, in the first ten years.",
    "Now, please open your notes at page forty two.",
    "I would like you to read the short passage about the harbour before Thursday.",
    "The harbour master kept a diary from eighteen eighty to nineteen twenty.",
    "He wrote down the weather, the ships that came in, and the price of coal.",
    "His handwriting is hard to read, so a group of volunteers typed it out.",
    "Their work took four winters, and they finished it just before the museum opened.",
    "Our next meeting moves to the large room on the third floor.",
    "Bring a pencil, a ruler and something to drink, because the session runs long.",
    "If you cannot attend, send me a message and I will share the slides.",
    "Questions about the essay can wait until the end of the hour.",
    "The essay should be about two thousand words, and it is due in three weeks.",
    "Choose one river, describe its course, and explain one change people made to it.",
    "Good sources are the library, the city archive and the records of the water board.",
    "Please do not copy whole paragraphs from the internet.",
    "Last year a student wrote a wonderful piece about a mill and its wheel.",
    "She interviewed the miller's grandson, who still lives next to the stream.",
    "He told her that the wheel turned for the last time in nineteen sixty seven.",
    "The building is now a small cafe, and the wheel is painted bright red.",
    "Let us take a short break of ten minutes.",
    "Welcome back, I hope the coffee was better than last week.",
    "We now turn from rivers to lakes, which behave in a very different way.",
    "A lake stores water, warms slowly in summer and cools slowly in winter.",
    "Deep lakes form layers, with cold heavy water at the bottom and warm water on top.",
    "In autumn the layers mix, and the whole lake turns over within a few days.",
    "Fishermen know this moment well, because the fish suddenly move to new places.",
    "Why do you think the water at the bottom never freezes?",
    "Because water is heaviest at four degrees, the coldest water rises and freezes at the top.",
    "This simple fact allows fish to survive under the ice all winter.",
    "Our last topic for today is the quality of drinking water.",
    "Most towns take their water from wells, rivers or reservoirs in the hills.",
    "The water is filtered through sand, treated, tested and then pumped into the pipes.",
    "Every day a laboratory checks samples from dozens of places in the network.",
    "When a test fails, the engineers close a valve and flush the pipes.",
    "That happened twice last year, and both times the problem was found within hours.",
    "Thank you for listening, and I will see you all next Tuesday at nine.",
    "Remember that the library closes early on Friday afternoons.",
]


@dataclasses.dataclass(frozen=True)
class SentenceRef:
    start: float  # seconds in the file where the spoken sentence begins
    end: float
    text: str
    de: str | None  # German reference (grammar sentences only)
    voice: str


@dataclasses.dataclass(frozen=True)
class LongformFile:
    id: str
    audio: Path
    seconds: float
    text: str  # the whole-file reference: sentences joined by spaces
    kind: str  # "grammar" or "prose"
    voices: tuple[str, ...]
    noise_snr_db: float | None
    sentences: tuple[SentenceRef, ...]

    def to_json(self) -> dict:
        row = dataclasses.asdict(self)
        row["audio"] = self.audio.name
        return row

    @classmethod
    def from_json(cls, row: dict, folder: Path) -> "LongformFile":
        return cls(**{**row, "audio": folder / row["audio"], "voices": tuple(row["voices"]),
                      "sentences": tuple(SentenceRef(**s) for s in row["sentences"])})


def missing_binaries() -> list[str]:
    return sorted({v.binary for v in VOICES if shutil.which(v.binary) is None})


def speak(text: str, voice: Voice) -> np.ndarray:
    """float32 mono 16 kHz audio of `text` in `voice`, leading/trailing silence trimmed."""
    return speak_many([text], voice)[0]


def speak_many(texts: list[str], voice: Voice) -> list[np.ndarray]:
    """`speak` for several sentences; festival speaks them all in one process (its start-up is ~1 s)."""
    with tempfile.TemporaryDirectory() as tmp:
        wavs = [os.path.join(tmp, f"{i}.wav") for i in range(len(texts))]
        if voice.engine == "festival":
            script = [f"(voice_{voice.name})"] + [
                f'(utt.save.wave (utt.synth (Utterance Text "{_scheme_string(t)}")) "{w}" \'riff)'
                for t, w in zip(texts, wavs)]
            subprocess.run(["festival", "--pipe"], input="\n".join(script) + "\n", text=True,
                           capture_output=True, check=True)
        else:
            for text, wav in zip(texts, wavs):
                subprocess.run(voice.command(text, wav), capture_output=True, check=True)
        return [_load_level_trim(w) for w in wavs]


def _scheme_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _load_level_trim(wav: str) -> np.ndarray:
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    peak = float(np.abs(audio).max()) or 1.0
    return _trim_silence(audio * (0.5 / peak), keep=0.05)  # engines differ in loudness; one level for all


def _background_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    # a room-like mix: low rumble (integrated white noise), hiss, and a faint mains hum
    rumble = np.cumsum(rng.standard_normal(n))
    rumble -= np.convolve(rumble, np.ones(801) / 801, mode="same")  # remove the drift
    rumble /= np.abs(rumble).max() + 1e-9
    hiss = rng.standard_normal(n) * 0.3
    hum = 0.2 * np.sin(2 * np.pi * 50 * np.arange(n) / SAMPLE_RATE)
    noise = rumble + hiss + hum
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Plan:
    id: str
    kind: str
    voices: tuple[Voice, ...]
    target_seconds: float
    sentences: tuple[tuple[str, str | None], ...]  # more than needed; speaking stops at the target
    seed: int
    noisy: bool


def _plans(n_files: int, seed: int, min_minutes: float, max_minutes: float) -> list[_Plan]:
    rng = random.Random(f"longform-{seed}")
    per_file = 130  # ~2.3 s spoken + ~1.2 s pause each: enough for 5 minutes
    n_grammar = sum(1 for i in range(n_files) if i % 3 != 2)
    grammar = generate("test", per_file * n_grammar, seed=seed, max_words=MAX_WORDS)
    rng.shuffle(grammar)
    plans, used = [], 0
    offset = rng.randrange(len(VOICES))
    for i in range(n_files):
        kind = "prose" if i % 3 == 2 else "grammar"
        voices = [VOICES[(offset + i) % len(VOICES)]]
        if i % 4 == 1:  # a dialogue: a second voice of another engine takes turns
            voices.append(rng.choice([v for v in VOICES if v.engine != voices[0].engine]))
        if kind == "grammar":
            take = grammar[used: used + per_file]
            used += per_file
        else:
            prose = PROSE[:]
            rng.shuffle(prose)
            take = [(s, None) for s in prose * 2]
        plans.append(_Plan(id=f"long{i:02d}-{kind}", kind=kind, voices=tuple(voices),
                           target_seconds=rng.uniform(min_minutes, max_minutes) * 60, sentences=tuple(take),
                           seed=rng.getrandbits(32), noisy=i % 3 == 0))
    return plans


def _render(plan: _Plan, out_dir: Path) -> LongformFile:
    rng = random.Random(plan.seed)
    pieces = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    cursor, refs, turn = 0.5, [], 0
    todo = list(plan.sentences)
    while todo and cursor < plan.target_seconds:
        # choose the next few sentences' voices first, then speak each voice's share in one call
        batch, todo = todo[:12], todo[12:]
        voices = []
        for _ in batch:
            if len(plan.voices) > 1 and rng.random() < 0.4:
                turn = 1 - turn
            voices.append(plan.voices[turn])
        spoken = {}
        for voice in dict.fromkeys(voices):
            mine = [i for i, v in enumerate(voices) if v == voice]
            spoken.update(zip(mine, speak_many([batch[i][0] for i in mine], voice)))
        for i, (text, de) in enumerate(batch):
            if cursor >= plan.target_seconds:
                break
            speech = spoken[i] * rng.uniform(0.7, 1.0)
            end = cursor + len(speech) / SAMPLE_RATE
            refs.append(SentenceRef(round(cursor, 3), round(end, 3), text, de, voices[i].label))
            pause = np.zeros(int(round(rng.uniform(*PAUSE_SECONDS) * SAMPLE_RATE)), np.float32)
            pieces += [speech, pause]
            cursor = sum(len(p) for p in pieces) / SAMPLE_RATE  # from sample counts: no drift
    audio = np.concatenate(pieces)
    snr = None
    if plan.noisy:
        snr = round(rng.uniform(*NOISE_SNR_DB), 1)
        speech_power = float(np.mean(np.concatenate([audio[int(r.start * SAMPLE_RATE): int(r.end * SAMPLE_RATE)]
                                                     for r in refs]) ** 2))
        noise = _background_noise(len(audio), np.random.default_rng(plan.seed))
        audio = audio + noise * np.sqrt(speech_power / 10 ** (snr / 10))
    audio = np.clip(audio, -1.0, 1.0)
    path = out_dir / f"{plan.id}.flac"
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return LongformFile(id=plan.id, audio=path, seconds=round(len(audio) / SAMPLE_RATE, 3),
                        text=" ".join(r.text for r in refs), kind=plan.kind,
                        voices=tuple(v.label for v in plan.voices), noise_snr_db=snr, sentences=tuple(refs))


def default_dir(n_files: int, seed: int) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "cascadekit" / "longform" / f"v{BUILD_VERSION}-seed{seed}-n{n_files}"


def build_longform(out_dir: Path | None = None, n_files: int = 12, seed: int = 0, min_minutes: float = 2.0,
                   max_minutes: float = 5.0, workers: int = 2) -> list[LongformFile]:
    """Build (or reuse, when already built with the same settings) the long-form set in `out_dir`."""
    if n_files < 1 or not 0 < min_minutes <= max_minutes:
        raise ValueError("need n_files >= 1 and 0 < min_minutes <= max_minutes")
    missing = missing_binaries()
    if missing:
        raise FileNotFoundError(f"speech synthesizers not found: {', '.join(missing)} "
                                "(apt-get install -y espeak-ng flite festival)")
    out_dir = Path(out_dir or default_dir(n_files, seed))
    settings = {"version": BUILD_VERSION, "n_files": n_files, "seed": seed, "min_minutes": min_minutes,
                "max_minutes": max_minutes}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    done = out_dir / "build.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        return load_longform(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = _plans(n_files, seed, min_minutes, max_minutes)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # the synthesizers run as subprocesses
        files = list(pool.map(lambda p: _render(p, out_dir), plans))
    for f in files:
        (out_dir / f"{f.id}.json").write_text(json.dumps(f.to_json(), indent=1), encoding="utf-8")
    with open(out_dir / "manifest.jsonl", "w", encoding="utf-8") as m:
        for f in files:
            row = {"id": f.id, "audio": f.audio.name, "ref_en": f.text}
            if all(s.de for s in f.sentences):
                row["ref_de"] = " ".join(s.de for s in f.sentences)
            m.write(json.dumps(row, ensure_ascii=False) + "\n")
    done.write_text(json.dumps({**settings, "key": key}))  # last: marks the folder complete
    return files


def load_longform(out_dir: Path) -> list[LongformFile]:
    out_dir = Path(out_dir)
    ids = [json.loads(line)["id"] for line in (out_dir / "manifest.jsonl").read_text().splitlines() if line]
    return [LongformFile.from_json(json.loads((out_dir / f"{i}.json").read_text()), out_dir) for i in ids]


def excerpt(f: LongformFile, max_seconds: float | None) -> tuple[np.ndarray, LongformFile]:
    """The file's audio cut after the last sentence that ends within `max_seconds`, with its references."""
    audio, rate = sf.read(f.audio, dtype="float32")
    assert rate == SAMPLE_RATE, f"{f.audio}: {rate} Hz"
    if max_seconds is None or max_seconds >= f.seconds:
        return audio, f
    kept = tuple(s for s in f.sentences if s.end <= max_seconds) or f.sentences[:1]
    cut = min(len(audio), int((kept[-1].end + 0.3) * SAMPLE_RATE))
    return audio[:cut], dataclasses.replace(f, seconds=round(cut / SAMPLE_RATE, 3), sentences=kept,
                                            text=" ".join(s.text for s in kept))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder (default: the cascadekit cache)")
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-minutes", type=float, default=2.0)
    parser.add_argument("--max-minutes", type=float, default=5.0)
    args = parser.parse_args(argv)
    files = build_longform(args.out, args.files, args.seed, args.min_minutes, args.max_minutes)
    total = sum(f.seconds for f in files)
    for f in files:
        print(f"{f.id}: {f.seconds / 60:.1f} min, {len(f.sentences)} sentences, {', '.join(f.voices)}"
              + (f", noise {f.noise_snr_db} dB SNR" if f.noise_snr_db is not None else ""))
    print(f"{len(files)} files, {total / 60:.1f} min -> {files[0].audio.parent}")


if __name__ == "__main__":
    main()
