"""run_merge: plan every output tensor from file headers, then stream one tensor at a time.

Planning reads only headers, so every config, shape, dtype and missing-tensor problem is
reported before any tensor data is read or anything is written. Streaming loads the
inputs of one tensor (the next tensor's inputs are prefetched in a background thread),
merges, and writes the result straight into its output shard. Output goes to a hidden
temporary dir beside OUT_DIR, renamed into place only when complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import yaml

from stages.methods.merging.lazy_checkpoint import Checkpoint, TensorInfo
from stages.methods.merging.merge_config import MergeConfig, ModelEntry, dtype_from_name, load_merge_config, parse_merge_config
from stages.methods.merging.merge_errors import MergeConfigError, MergeInputError
from stages.methods.merging.merge_methods import MethodSpec, get_method
from stages.methods.merging.model_files import copy_config, copy_tokenizer
from stages.methods.merging.merge_parameters import layer_counts, layer_position, resolve
from stages.methods.merging.shard_writer import DEFAULT_SHARD_BYTES, ShardWriter
from stages.methods.merging.tied_weights import tied_sources

LOG = logging.getLogger(__name__)
PREFETCH_BYTES = 256 * 1024**2  # max input bytes of the current plus the prefetched tensor group


@dataclass
class MergeInput:
    label: str  # how errors name this model, e.g. "models[1] (/ckpt/a)"
    checkpoint: Checkpoint
    entry: Optional[ModelEntry]  # None for a base model not listed under `models`


@dataclass
class TensorJob:
    name: str
    sources: List[str]  # tensor name to read from each input (a tied source when absent)
    out: TensorInfo
    floating: bool
    shared: Dict[str, Any] = field(default_factory=dict)
    per_model: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class MergePlan:
    method: MethodSpec
    base: Optional[MergeInput]
    models: List[MergeInput]  # the non-base inputs, in config order
    jobs: List[TensorJob]
    load_dtype: Optional[torch.dtype]

    @property
    def inputs(self) -> List[MergeInput]:
        return ([self.base] if self.base else []) + self.models

    def close(self) -> None:
        for inp in self.inputs:
            inp.checkpoint.close()


def plan_merge(config: MergeConfig) -> MergePlan:
    """Validate everything that can be checked without reading tensor data."""
    method = get_method(config.merge_method)
    config.check_paths()
    opened: Dict[Path, Checkpoint] = {}

    def open_input(path: str, label: str, entry: Optional[ModelEntry]) -> MergeInput:
        key = Path(path).resolve()
        if key not in opened:
            opened[key] = Checkpoint(Path(path))
        return MergeInput(f"{label} ({path})", opened[key], entry)

    try:
        base = open_input(config.base_model, "base_model", None) if method.needs_base else None
        models = [open_input(e.model, f"models[{i}]", e) for i, e in enumerate(config.models)
                  if not (method.needs_base and config.is_base(e))]
        plan = MergePlan(method, base, models, [], dtype_from_name(config.dtype))
        plan.jobs = _plan_jobs(config, plan)
        return plan
    except BaseException:
        for ckpt in opened.values():
            ckpt.close()
        raise


def _plan_jobs(config: MergeConfig, plan: MergePlan) -> List[TensorJob]:
    inputs = plan.inputs
    names = sorted(set().union(*(inp.checkpoint.names() for inp in inputs)))
    counts = layer_counts(names)
    out_dtype = dtype_from_name(config.out_dtype)
    method = plan.method
    jobs = []
    for name in names:
        sources = [_source_name(name, inp, inputs) for inp in inputs]
        infos = [inp.checkpoint.info(src) for inp, src in zip(inputs, sources)]
        _check_shapes(name, inputs, infos)
        floating = [info.dtype.is_floating_point for info in infos]
        if any(floating) and not all(floating):
            kinds = ", ".join(f"{inp.label}: {info.dtype}" for inp, info in zip(inputs, infos))
            raise MergeInputError(f"tensor {name!r} is floating point in some models only ({kinds})")
        if not floating[0]:
            jobs.append(TensorJob(name, sources, infos[0], floating=False))
            continue
        ref_dtype = plan.load_dtype or infos[0].dtype  # the base's for base methods, else models[0]'s
        job = TensorJob(name, sources, TensorInfo(infos[0].shape, out_dtype or ref_dtype), floating=True)
        t = layer_position(name, counts)
        for pname, spec in method.shared.items():
            job.shared[pname] = resolve(pname, spec, [config.parameters], tensor_name=name, t=t, where="parameters")
        for inp in plan.models:
            scopes = [inp.entry.parameters if inp.entry else None, config.parameters]
            job.per_model.append({
                pname: resolve(pname, spec, scopes, tensor_name=name, t=t, where=inp.label)
                for pname, spec in method.per_model.items()})
        if method.name == "linear" and job.shared["normalize"]:
            if sum(p["weight"] for p in job.per_model) == 0:
                raise MergeConfigError(
                    f"parameters: weights sum to 0 for tensor {name!r}; with normalize: true that divides by 0")
        jobs.append(job)
    return jobs


def _source_name(name: str, inp: MergeInput, inputs: Sequence[MergeInput]) -> str:
    ckpt = inp.checkpoint
    if name in ckpt:
        return name
    tied = tied_sources(str(ckpt.dir)).get(name)
    if tied is not None and tied in ckpt:
        return tied
    holders = [other.label for other in inputs if name in other.checkpoint]
    raise MergeInputError(
        f"tensor {name!r} is missing from {inp.label} but present in {', '.join(holders)} "
        "(and it is not a tied weight of that model)")


def _check_shapes(name: str, inputs: Sequence[MergeInput], infos: Sequence[TensorInfo]) -> None:
    if all(info.shape == infos[0].shape for info in infos):
        return
    shapes = "; ".join(f"{inp.label}: {list(info.shape)}" for inp, info in zip(inputs, infos))
    hint = ""
    rows_only = all(len(i.shape) >= 2 and i.shape[1:] == infos[0].shape[1:] for i in infos)
    if rows_only and any(word in name for word in ("embed", "lm_head", "shared", "wte", "word", "output")):
        hint = " — different vocabulary sizes? Models merged together must share one tokenizer"
    raise MergeInputError(f"shape mismatch for tensor {name!r}: {shapes}{hint}")


# ---------------------------------------------------------------- streaming


def _load_inputs(plan: MergePlan, job: TensorJob) -> List[torch.Tensor]:
    tensors = []
    for inp, src in zip(plan.inputs, job.sources):
        x = inp.checkpoint.load(src)
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise MergeInputError(f"tensor {src!r} of {inp.label} contains NaN or Inf")
        tensors.append(x)
    return tensors


def _merge_one(plan: MergePlan, job: TensorJob, tensors: List[torch.Tensor], device: torch.device,
               generator: Optional[torch.Generator]) -> torch.Tensor:
    if not job.floating:
        first = tensors[0]
        for inp, x in zip(plan.inputs[1:], tensors[1:]):
            if x.dtype != first.dtype or not torch.equal(x, first):
                raise MergeInputError(
                    f"non-floating tensor {job.name!r} differs between {plan.inputs[0].label} and {inp.label}")
        return first
    prepared = []
    while tensors:  # pop so that the only references left are the ones handed to the method
        x = tensors.pop(0)
        if plan.load_dtype is not None:
            x = x.to(plan.load_dtype)  # mergekit rounds inputs to `dtype` first
        prepared.append(x.to(device, non_blocking=True))  # methods upcast inside their ops
        del x
    base = prepared.pop(0) if plan.base else None
    merged = plan.method.merge(prepared, base, job.shared, job.per_model, generator)
    del prepared, base
    return merged.to(job.out.dtype)


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif overwrite:
            trash = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
            out.rename(trash)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
            return
        else:
            raise MergeConfigError(f"output dir {out} appeared during the merge; not replacing it")
    tmp.rename(out)


def check_output_dir(out_dir: Union[str, Path], overwrite: bool = False) -> Path:
    """OUT_DIR must be new or empty (or overwrite=True), and creatable: checked before any work."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MergeConfigError(f"output dir {out} exists and is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MergeConfigError(f"output dir {out} exists and is not empty (pass --overwrite, or overwrite=True in Python, to replace it)")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MergeConfigError(f"output dir {out}: cannot create it, {parent} is not a writable folder")
    return out


def _pick_device(device: Union[str, torch.device, None]) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_merge(
    config: Union[MergeConfig, Mapping[str, Any], str, Path],
    out_dir: Union[str, Path],
    *,
    device: Union[str, torch.device, None] = "cpu",
    seed: Optional[int] = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Merge the models of `config` into OUT_DIR (a from_pretrained-loadable model dir).

    config: a MergeConfig, a dict in the YAML schema, or a path to the YAML file.
    device: "cpu", "cuda", "auto" (cuda when available). seed: for the random DARE drop;
    None draws a fresh seed. OUT_DIR must not exist or be empty, unless overwrite=True.
    """
    if isinstance(config, (str, Path)):
        config = load_merge_config(config)
    elif not isinstance(config, MergeConfig):
        config = parse_merge_config(dict(config))
    out = check_output_dir(out_dir, overwrite)
    dev = _pick_device(device)
    plan = plan_merge(config)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _stream(plan, tmp, dev, seed, max_shard_bytes)
        _write_model_files(config, plan, tmp)
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        plan.close()
    LOG.info("merged %d tensors into %s", len(plan.jobs), out)
    return out


def _stream(plan: MergePlan, out_dir: Path, device: torch.device, seed: Optional[int], max_shard_bytes: int) -> None:
    generator = None
    if plan.method.random:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    writer = ShardWriter(out_dir, [(job.name, job.out) for job in plan.jobs], max_shard_bytes)
    jobs = plan.jobs
    # A background thread reads (and NaN-checks) the next tensor's inputs during the merge,
    # unless holding both groups would exceed the prefetch budget (huge embeddings).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-prefetch") as pool:
        pending = None
        try:
            for i, job in enumerate(jobs):
                tensors = pending.result() if pending is not None else _load_inputs(plan, job)
                pending = None
                if i + 1 < len(jobs) and _group_bytes(plan, job) + _group_bytes(plan, jobs[i + 1]) <= PREFETCH_BYTES:
                    pending = pool.submit(_load_inputs, plan, jobs[i + 1])
                merged = _merge_one(plan, job, tensors, device, generator)
                del tensors
                writer.write(job.name, merged)
                del merged
            writer.finalize()
        finally:
            writer.close()
            if pending is not None:
                pending.cancel()


def _group_bytes(plan: MergePlan, job: TensorJob) -> int:
    return sum(inp.checkpoint.info(src).nbytes for inp, src in zip(plan.inputs, job.sources))


def _write_model_files(config: MergeConfig, plan: MergePlan, out_dir: Path) -> None:
    donor = Path(config.base_model or config.models[0].model)
    config_source = Path(config.config_source) if config.config_source else donor
    tok = config.tokenizer_source
    tokenizer_source = donor if tok in (None, "base") else Path(tok)
    floating = [job.out.dtype for job in plan.jobs if job.floating]
    copy_config(config_source, out_dir, floating[0] if floating else None)
    copy_tokenizer(tokenizer_source, out_dir)
    dump = config.model_dump(mode="json", exclude_none=True)
    (out_dir / "merge_config.yml").write_text(yaml.safe_dump(dump, sort_keys=False))
