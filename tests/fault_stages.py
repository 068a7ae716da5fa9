"""Stages that misbehave on purpose (OOM, random transient failures, dying workers) and
stages that record when and where they ran. Importable by workers as tests.fault_stages."""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

from pipelines.graph import Pipeline
from stages.base import Stage, StageConfig, TransientError
from stages.runtime.model_cache import load_cached
from stages.payloads import Text


def _log(path: str | None, record: dict) -> None:
    if path:
        with open(path, "a") as f:  # one short line per write: appends do not interleave
            f.write(json.dumps(record) + "\n")


def read_log(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Hungry(Stage):
    """Runs out of memory on batches of more than `max_items`, and on any item that says 'huge'."""

    Input = Text
    Output = Text
    kind = "hungry"

    class Config(StageConfig):
        max_items: int = 3
        log: str | None = None

    def process(self, batch):
        _log(self.config.log, {"size": len(batch), "texts": [t.text for t in batch]})
        if len(batch) > self.config.max_items or any("huge" in t.text for t in batch):
            raise MemoryError(f"cannot allocate activations for {len(batch)} items")
        return [Text(text=t.text.upper()) for t in batch]


_draw_lock = threading.Lock()
_draws: dict[int, random.Random] = {}


class Unreliable(Stage):
    """Fails with a transient error on a random `failure_rate` of its calls (seeded per process)."""

    Input = Text
    Output = Text
    kind = "unreliable"

    class Config(StageConfig):
        failure_rate: float = 0.1
        seed: int = 0
        log: str | None = None

    def process(self, batch):
        with _draw_lock:
            fail = _draws.setdefault(self.config.seed, random.Random(self.config.seed)).random() < \
                self.config.failure_rate
        _log(self.config.log, {"ids": [t.text for t in batch], "failed": fail})
        if fail:
            raise TransientError("the device was busy (simulated)")
        return [Text(text=t.text[::-1]) for t in batch]


class GpuSleeper(Stage):
    """A 'GPU' stage that sleeps and records its start and end times."""

    Input = Text
    Output = Text
    kind = "gpu_sleeper"
    uses_gpu = True

    class Config(StageConfig):
        sleep: float = 0.4
        log: str | None = None

    def process(self, batch):
        start = time.time()
        time.sleep(self.config.sleep)
        _log(self.config.log, {"start": start, "end": time.time(), "pid": os.getpid()})
        return [Text(text=t.text.title()) for t in batch]


class CachedModel(Stage):
    """Loads a 'model' through the process-wide cache and records every load and every call."""

    Input = Text
    Output = Text
    kind = "cached_model"

    class Config(StageConfig):
        log: str | None = None
        sleep: float = 0.0
        die_once: str | None = None  # a marker file: the first call to see it absent kills its own process

    def process(self, batch):
        def load():
            _log(self.config.log, {"event": "load", "pid": os.getpid()})
            return {"suffix": "!"}

        model = load_cached("toy-model", "fixed", "cpu", "float32", load)
        _log(self.config.log, {"event": "call", "pid": os.getpid(), "texts": [t.text for t in batch]})
        if self.config.die_once and not os.path.exists(self.config.die_once):
            open(self.config.die_once, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # a node lost mid-task, before any result is stored
        time.sleep(self.config.sleep)
        return [Text(text=t.text + model["suffix"]) for t in batch]


def cached_then_upper(log: str = "", sleep: float = 0.0, die_once: str = "") -> Pipeline:
    """CachedModel -> Upper: for runner parity, model-cache reuse and lost-worker tests."""
    from tests.toy_stages import Upper

    return Pipeline.chain(CachedModel(log=log or None, sleep=sleep, die_once=die_once or None), Upper(),
                          name="cached-upper")
