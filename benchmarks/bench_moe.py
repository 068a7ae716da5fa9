"""SparseMoE vs transformers' eager MixtralSparseMoeBlock (same weights) and vs a dense SwiGLU
FFN with the same active FLOPs (d_ff = k · 1024). For reference the table also shows the
same block with transformers' `grouped_mm` experts implementation (its from_pretrained default).

    python benchmarks/bench_moe.py [--repeats-scale 1.0] [--dtype float32|bfloat16] [--threads N]

Runs on CUDA when present (bf16 there by default, which lets the grouped-GEMM path engage),
else CPU float32. Timings are medians of interleaved repeats after a warm-up, so a noisy shared
machine disturbs both sides alike. Last line: JSON of ours/theirs time ratios (< 1 = faster).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.methods.moe import SwiGLU  # noqa: E402
from stages.methods.moe.moe_hf import moe_from_hf_block  # noqa: E402

D_MODEL, D_FF, N_EXPERTS, TOP_K = 512, 1024, 8, 2
TOKENS = (1, 8, 64, 512, 4096)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, x: torch.Tensor, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each fn, calling them in turn so load spikes hit all equally."""
    for _ in range(warmup):
        for fn in fns.values():
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(x.device)
            start = time.perf_counter()
            fn(x)
            sync(x.device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def build(device: torch.device, dtype: torch.dtype):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    config = MixtralConfig(hidden_size=D_MODEL, intermediate_size=D_FF, num_local_experts=N_EXPERTS,
                           num_experts_per_tok=TOP_K)
    config._experts_implementation = "eager"
    torch.manual_seed(0)
    hf = MixtralSparseMoeBlock(config)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.02)
    hf = hf.to(device, dtype).eval()
    hf_grouped = copy.deepcopy(hf)
    hf_grouped.experts.config = copy.copy(config)
    hf_grouped.experts.config._experts_implementation = "grouped_mm"
    ours = moe_from_hf_block(hf).eval()
    dense = SwiGLU(D_MODEL, TOP_K * D_FF).to(device, dtype).eval()
    return hf, hf_grouped, ours, dense


def read_bandwidth(device: torch.device, dtype: torch.dtype, mbytes: int = 256) -> float:
    """Bytes per second this device streams from memory (median of a few full reads of a large tensor)."""
    big = torch.ones(mbytes * 2**20 // torch.finfo(dtype).bits * 8, device=device, dtype=dtype)
    times = []
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        big.sum()
        sync(device)
        times.append(time.perf_counter() - start)
    return big.numel() * big.element_size() / statistics.median(times[1:])


def weight_read_floor(hf, x: torch.Tensor, bandwidth: float) -> float:
    """Seconds just to read the weights of every expert the router picks for `x` once: no layer can be
    faster than this when it is memory-bound (small T), however it dispatches."""
    logits = torch.nn.functional.linear(x.reshape(-1, D_MODEL), hf.gate.weight)
    hit = logits.topk(TOP_K, dim=-1).indices.unique().numel()
    expert_bytes = 3 * D_MODEL * D_FF * x.element_size()
    return hit * expert_bytes / bandwidth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats-scale", type=float, default=1.0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    hf, hf_grouped, ours, dense = build(device, dtype)
    print(f"device={device} dtype={dtype} threads={torch.get_num_threads()} "
          f"d={D_MODEL} d_ff={D_FF} E={N_EXPERTS} k={TOP_K}")

    bandwidth = read_bandwidth(device, dtype)
    print(f"memory read bandwidth {bandwidth / 1e9:.1f} GB/s")
    ratios: dict[str, float] = {}
    rows = []
    with torch.inference_mode():
        for T in TOKENS:
            x = torch.randn(1, T, D_MODEL, device=device, dtype=dtype)
            diff = (ours(x)[0] - hf(x)).abs().max().item()
            fns = {"hf": hf, "hf_grouped": hf_grouped, "ours": lambda t: ours(t)[0]}
            if T == 4096:
                fns["dense"] = dense
            repeats = max(3, int((40 if T <= 64 else 15 if T <= 512 else 7) * args.repeats_scale))
            t = time_interleaved(fns, x, repeats)
            ratios[f"hf_ratio_T{T}"] = t["ours"] / t["hf"]
            dense_ms = f"{t['dense'] * 1e3:9.2f}" if "dense" in t else f"{'-':>9}"
            if "dense" in t:
                ratios[f"dense_ratio_T{T}"] = t["ours"] / t["dense"]
            floor = weight_read_floor(hf, x, bandwidth)
            if T in (8, 64):
                ratios[f"hf_over_floor_T{T}"] = t["hf"] / floor
            rows.append(f"{T:>6} {t['hf'] * 1e3:9.2f} {t['hf_grouped'] * 1e3:10.2f} {t['ours'] * 1e3:9.2f} "
                        f"{dense_ms} {floor * 1e3:9.2f} {t['ours'] / t['hf']:9.3f} {diff:10.2e}")

    print(f"{'tokens':>6} {'hf ms':>9} {'hf-grp ms':>10} {'ours ms':>9} {'dense ms':>9} {'floor ms':>9} "
          f"{'ours/hf':>9} {'max|diff|':>10}")
    print("\n".join(rows))
    keys = ["hf_ratio_T8", "hf_ratio_T64", "hf_ratio_T512", "hf_ratio_T4096", "dense_ratio_T4096",
            "hf_over_floor_T8", "hf_over_floor_T64"]
    setup = {"device": device.type, "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
             "d_model": D_MODEL, "d_ff": D_FF, "experts": N_EXPERTS, "top_k": TOP_K, "tokens": list(TOKENS)}
    print(json.dumps({**{k: round(ratios[k], 4) for k in keys}, "bandwidth_gbs": round(bandwidth / 1e9, 1),
                      "setup": setup}))


if __name__ == "__main__":
    main()
