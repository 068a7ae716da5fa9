"""Build every offline demo asset in one Prefect flow: `python -m demo.build_demo`.

corpus (dev/test files) -> test clips -> spoken train shards -> ASR, MT, LM -> evaluation.
Needs espeak-ng and sox for the audio steps (training-time only). The MT and LM
tasks do not depend on the audio, so they run beside the ASR training.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@task
def make_corpus(root: str) -> dict[str, str]:
    from demo.demo_grammar import write_corpus

    return {k: str(v) for k, v in write_corpus(Path(root) / "assets/demo/corpus").items()}


@task
def make_test_clips(root: str, corpus_test: str) -> str:
    from demo.make_demo_audio import make_test_set

    return str(make_test_set(Path(corpus_test), Path(root) / "assets/demo/test"))


@task
def make_train_audio(root: str, n_clips: int) -> str:
    from demo.make_demo_audio import make_train_mels

    return str(make_train_mels(Path(root) / "build/demo_audio", n_clips))


@task
def train_asr_model(root: str, audio_dir: str, steps: int, max_minutes: float) -> dict:
    from demo.train_demo_asr import train

    out = Path(root) / "assets/models/asr-tiny/model.pt"
    return train(Path(audio_dir), out, steps=steps, max_minutes=max_minutes, batch_size=16, lr=1.5e-3,
                 warmup=120, eval_every=200, threads=1, min_clips=1,
                 log_path=Path(root) / "build/logs/asr.log")


@task
def train_mt_model(root: str, max_minutes: float, max_steps: int | None) -> dict:
    from demo.train_demo_mt import MTTrainConfig, train_mt

    return train_mt(MTTrainConfig(out_dir=Path(root) / "assets/models/mt-en-de", max_minutes=max_minutes,
                                  max_steps=max_steps, batch_size=48, threads=1))


@task
def train_lm_model(root: str, max_steps: int) -> dict:
    from demo.train_demo_lm import LMTrainConfig, train_lm

    return train_lm(LMTrainConfig(out_dir=Path(root) / "assets/models/lm-en", max_steps=max_steps, threads=1))


@task
def evaluate_models(root: str) -> dict:
    from demo.eval_demo import evaluate

    models = Path(root) / "assets/models"
    result = evaluate(models / "asr-tiny/model.pt", models / "mt-en-de", Path(root) / "assets/demo/test")
    result.pop("errors")
    return result


@flow(name="train-demo-models")
def train_demo(root: str = str(ROOT), n_clips: int = 16000, asr_steps: int = 8000, asr_minutes: float = 60.0,
               mt_minutes: float = 30.0, mt_steps: int | None = None, lm_steps: int = 600) -> dict:
    # transformers resolves names lazily and that is not thread-safe: resolve them before the threads start
    from transformers import GPT2Config, GPT2LMHeadModel, MarianConfig, MarianMTModel  # noqa: F401

    corpus = make_corpus(root)
    make_test_clips(root, corpus["test"])
    # MT and LM need only text: they train while speech is synthesised and the ASR trains
    mt = train_mt_model.submit(root, mt_minutes, mt_steps)
    lm = train_lm_model.submit(root, lm_steps)
    audio_dir = make_train_audio(root, n_clips)
    asr = train_asr_model(root, audio_dir, asr_steps, asr_minutes)
    results = {"asr": asr, "mt": mt.result(), "lm": lm.result()}
    results["eval"] = evaluate_models(root)
    print(results["eval"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=str(ROOT), help="where assets/ and build/ are written")
    parser.add_argument("--n-clips", type=int, default=16000)
    parser.add_argument("--asr-steps", type=int, default=8000)
    parser.add_argument("--asr-minutes", type=float, default=60.0)
    parser.add_argument("--mt-minutes", type=float, default=30.0)
    parser.add_argument("--mt-steps", type=int, default=None)
    parser.add_argument("--lm-steps", type=int, default=600)
    args = parser.parse_args()
    train_demo(args.root, args.n_clips, args.asr_steps, args.asr_minutes, args.mt_minutes, args.mt_steps,
               args.lm_steps)


if __name__ == "__main__":
    main()
