"""TIES merge of three ~134M-parameter Llama-style fine-tunes onto a base: ours vs mergekit 0.1.5.

Each tool runs as a child process (interpreter start-up and imports included); wall time and
peak RSS come from os.wait4's per-child rusage. Runs alternate, best of --repeats is kept.
Goals: time ratio (ours / mergekit) <= 0.5, RSS ratio <= 1.

    .venv/bin/python benchmarks/bench_merge.py [--repeats 2] [--dtype bfloat16] [--workdir DIR]

Needs .venv-mergekit (bash scripts/mergekit_venv.sh). Last line: {"time_ratio": ..., "rss_ratio": ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
MERGEKIT = Path(os.environ.get("MERGEKIT_VENV", ROOT / ".venv-mergekit")) / "bin" / "mergekit-yaml"
SHARD_BYTES = 200 * 1024**2

LLAMA = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
             num_attention_heads=12, num_key_value_heads=12)


def llama_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f)})
    return shapes


def _gen(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))


def write_model(out: Path, seed: int, dtype: torch.dtype, base_seed: int | None) -> int:
    """Random weights (a fine-tune = base weights + small noise), sharded safetensors + index."""
    from transformers import LlamaConfig

    out.mkdir(parents=True)
    LlamaConfig(**LLAMA, architectures=["LlamaForCausalLM"], tie_word_embeddings=False, dtype=str(dtype).removeprefix("torch.")).save_pretrained(out)
    shapes = llama_shapes(LLAMA)
    shards, current, size, n_params = [], {}, 0, 0
    for name, shape in shapes.items():
        root_seed = base_seed if base_seed is not None else seed
        t = torch.randn(shape, generator=_gen(root_seed, name)) * 0.02
        if base_seed is not None:
            t += torch.randn(shape, generator=_gen(seed, name)) * 0.002
        t = t.to(dtype)
        n_params += t.numel()
        if current and size + t.nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return n_params


def run_child(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--workdir", type=Path, default=None, help="keep models here (default: a temp dir)")
    args = ap.parse_args()
    if not MERGEKIT.exists():
        raise SystemExit(f"{MERGEKIT} missing: run `bash scripts/mergekit_venv.sh` first")
    dtype = getattr(torch, args.dtype)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_merge_"))
    try:
        t0 = time.perf_counter()
        n_params = 0
        for i, name in enumerate(["base", "ft1", "ft2", "ft3"]):
            if not (work / name / "config.json").exists():
                n_params = write_model(work / name, i, dtype, None if name == "base" else 0)
            else:
                n_params = sum(torch.Size(s).numel() for s in llama_shapes(LLAMA).values())
        print(f"models: 4 x {n_params / 1e6:.0f}M params ({args.dtype}), built in {time.perf_counter() - t0:.0f}s")
        config = {"merge_method": "ties", "base_model": str(work / "base"), "dtype": args.dtype,
                  "parameters": {"normalize": True},
                  "models": [{"model": str(work / f"ft{i}"), "parameters": {"weight": w, "density": d}}
                             for i, w, d in ((1, 0.5, 0.5), (2, 0.3, 0.4), (3, 0.2, 0.7))]}
        cfg = work / "ties.yml"
        cfg.write_text(yaml.safe_dump(config))
        for f in work.glob("*/*.safetensors"):  # warm the page cache for both tools alike
            f.read_bytes()
        cmds = {
            "ours": [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[3]); "
                     "from stages.methods.merging import run_merge; run_merge(sys.argv[1], sys.argv[2])",
                     str(cfg), str(work / "out_ours"), str(ROOT)],
            "mergekit": [str(MERGEKIT), str(cfg), str(work / "out_mergekit"), "--no-cuda", "--quiet",
                         "--no-write-model-card", "--copy-tokenizer"],
        }
        outs = {"ours": work / "out_ours", "mergekit": work / "out_mergekit"}
        best = {k: (float("inf"), float("inf")) for k in cmds}
        for rep in range(args.repeats):
            for name in (["ours", "mergekit"] if rep % 2 == 0 else ["mergekit", "ours"]):
                shutil.rmtree(outs[name], ignore_errors=True)
                wall, rss = run_child(cmds[name])
                print(f"  run {rep + 1} {name:9s} {wall:7.1f} s  {rss:8.0f} MiB", flush=True)
                best[name] = (min(best[name][0], wall), min(best[name][1], rss))
        check_close(work / "out_ours", work / "out_mergekit")
        load = os.getloadavg()[0]
        print(f"\n{'tool':10s} {'wall s':>8s} {'peak RSS MiB':>13s}   (best of {args.repeats}; load avg {load:.1f} on {os.cpu_count()} cores)")
        for name, (wall, rss) in best.items():
            print(f"{name:10s} {wall:8.1f} {rss:13.0f}")
        ratios = {"time_ratio": round(best["ours"][0] / best["mergekit"][0], 3),
                  "rss_ratio": round(best["ours"][1] / best["mergekit"][1], 3),
                  "setup": {"fine_tunes": len(config["models"]), "params_M": round(n_params / 1e6),
                            "dtype": args.dtype, "repeats": args.repeats}}
        print(json.dumps(ratios))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def check_close(ours: Path, theirs: Path) -> None:
    """Same tensors; values agree up to half-precision rounding (we accumulate in float32)."""
    sys.path.insert(0, str(ROOT))
    from stages.methods.merging.lazy_checkpoint import Checkpoint

    with Checkpoint(ours) as a, Checkpoint(theirs) as b:
        assert set(a.names()) == set(b.names()), "different tensor sets"
        worst = 0.0
        for name in a.names():
            x, y = a.load(name).float(), b.load(name).float()
            worst = max(worst, float((x - y).abs().max()))
    print(f"outputs agree: same {len(set(a.names()))} tensors, max |ours - mergekit| = {worst:.2e}")


if __name__ == "__main__":
    main()
