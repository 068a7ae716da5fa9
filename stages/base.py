"""The stage contract: typed batch in, one output or one typed error per item out.

A stage knows nothing about Prefect. The flow layer hands it a batch of
validated `Input` models and stores what comes back.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


class ItemError(BaseModel):
    """Why one item failed in one stage. Lands in errors.jsonl."""

    item_id: str = ""
    stage: str = ""
    kind: str = Field(description="bad_input | invalid_input | upstream_failed | exception | oom")
    message: str


class ItemFailure(Exception):
    """Raise (or return) from stage code to fail one item without failing the batch."""

    def __init__(self, message: str, kind: str = "bad_input"):
        super().__init__(message)
        self.kind = kind

    def to_error(self) -> ItemError:
        return ItemError(kind=self.kind, message=str(self))


class TransientError(Exception):
    """A failure worth retrying as is (network blip, busy device). The flow retries the batch."""


class ConfigError(ValueError):
    """A mistake that hits every item alike (a model that cannot load, a missing device, a language the
    model cannot produce). Never retried and never split per item: the job stops with one usage error."""


class StageConfig(BaseModel):
    """Base of every stage's config. Unknown keys are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    retries: int = Field(2, ge=0, description="retries of a batch on transient errors")
    retry_delay: float = Field(1.0, ge=0, description="seconds before the first retry; doubles each time")
    device: str = Field("auto", description="'auto' = cuda when present, else cpu")
    num_gpus: float = Field(0, ge=0, description="GPUs a task of this stage asks for (Ray, GPU pools)")
    num_cpus: float = Field(1, ge=0)


Result = BaseModel | ItemError | ItemFailure


class Stage(Generic[In, Out]):
    """Subclass, set `Input`, `Output`, `Config`, `kind`, implement `process`."""

    Input: ClassVar[type[BaseModel]]
    Output: ClassVar[type[BaseModel]]
    Config: ClassVar[type[StageConfig]] = StageConfig
    kind: ClassVar[str] = "stage"
    # True for stages whose work is tensor math worth a GPU: used for GPU limits.
    uses_gpu: ClassVar[bool] = False
    # Part of the resume key. Bump it when a code change alters what the stage outputs for the same
    # config, model and input, so stored batches of the old code are recomputed instead of reused.
    version: ClassVar[int] = 1

    def __init__(self, config: StageConfig | dict | None = None, /, **overrides: Any):
        if isinstance(config, StageConfig):
            config = config.model_dump()
        self.config = self.Config(**{**(config or {}), **overrides})

    # -- identity -------------------------------------------------------
    def model_identity(self) -> str:
        """What weights this stage computes with; part of the cache key. Override for models."""
        return ""

    def fingerprint(self) -> str:
        """Digest of everything that changes this stage's outputs for the same inputs."""
        cls = type(self)
        # Runtime knobs (retries, device, resources) do not change results.
        skip = {"retries", "retry_delay", "device", "num_gpus", "num_cpus"}
        cfg = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in skip}
        blob = json.dumps(
            {"stage": f"{cls.__module__}.{cls.__qualname__}", "version": cls.version,
             "config": cfg, "model": self.model_identity()},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def spec(self) -> dict:
        """A JSON description that rebuilds this stage in another process (see `stage_from_spec`)."""
        cls = type(self)
        return {"cls": f"{cls.__module__}:{cls.__qualname__}", "config": self.config.model_dump(mode="json")}

    def preflight(self) -> None:
        """Cheap checks of the config against the model's files, before any item runs and without
        loading weights. Raise ConfigError (a ValueError) for a config the model cannot serve: one usage error.
        The flow checks the device of every stage itself (flows/preflight.py)."""

    # -- work -----------------------------------------------------------
    def process(self, batch: list[In]) -> list[Result]:
        raise NotImplementedError

    def run_batch(self, batch: list[In]) -> list[BaseModel | ItemError]:
        """`process` with per-item isolation.

        A batch that raises is split in halves and retried down to single items,
        so one poisonous item (or an out-of-memory batch) costs only itself.
        Transient errors propagate untouched: the flow retries them as a whole.
        """
        if not batch:
            return []
        try:
            results = self.process(batch)
        except (TransientError, ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001 - isolated per item below
            if len(batch) == 1:
                message = str(exc) if isinstance(exc, ItemFailure) else f"{type(exc).__name__}: {exc}"
                return [ItemError(kind=_error_kind(exc), message=message)]
            mid = len(batch) // 2
            return self.run_batch(batch[:mid]) + self.run_batch(batch[mid:])
        if len(results) != len(batch):
            raise RuntimeError(f"{self.kind}.process returned {len(results)} results for {len(batch)} inputs")
        return [r.to_error() if isinstance(r, ItemFailure) else r for r in results]

    # -- composition ----------------------------------------------------
    def __rshift__(self, other):
        from pipelines.graph import Pipeline

        return Pipeline.chain(self, other)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "oom"
    if isinstance(exc, ItemFailure):
        return exc.kind
    return "exception"


def stage_from_spec(spec: dict) -> Stage:
    """Rebuild a stage from `Stage.spec()` (used by workers in other processes)."""
    from stages.registry import load_target

    return load_target(spec["cls"])(spec.get("config") or {})
