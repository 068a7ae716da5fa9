"""Small deterministic stages for testing the spine (no models)."""
from __future__ import annotations

import os
import time

from pydantic import BaseModel

from stages.base import ItemFailure, Stage, StageConfig, TransientError
from stages.payloads import Text


class Counted(Stage):
    """Counts its calls in `count_file` and sleeps `sleep` s per call (for resume and retry tests)."""

    class Config(StageConfig):
        count_file: str | None = None
        sleep: float = 0.0

    def tick(self) -> None:
        _count(self.config.count_file, self.kind)
        time.sleep(self.config.sleep)


class Upper(Counted):
    Input = Text
    Output = Text
    kind = "upper"

    def process(self, batch):
        self.tick()
        out = []
        for item in batch:
            if item.text.startswith("BAD"):
                out.append(ItemFailure(f"cannot process {item.text!r}"))
            else:
                out.append(Text(text=item.text.upper(), language=item.language))
        return out


class Words(BaseModel):
    words: list[str]
    n: int


class Split(Counted):
    Input = Text
    Output = Words
    kind = "split"

    def process(self, batch):
        self.tick()
        return [Words(words=t.text.split(), n=len(t.text.split())) for t in batch]


class Flaky(Stage):
    """Fails with a transient error the first `failures` calls (counted in a file)."""

    Input = Text
    Output = Text
    kind = "flaky"

    class Config(StageConfig):
        count_file: str
        failures: int = 1

    def process(self, batch):
        calls = _count(self.config.count_file, self.kind)
        if calls <= self.config.failures:
            raise TransientError(f"flaky call {calls}")
        return [Text(text=t.text[::-1]) for t in batch]


def _count(path: str | None, kind: str) -> int:
    """Append one line per call; return how many calls so far (for resume/retry tests)."""
    if not path:
        return 0
    with open(path, "a") as f:
        f.write(f"{kind} {os.getpid()}\n")
    with open(path) as f:
        return sum(1 for line in f if line.startswith(kind))
