"""Prefect process workers, one per GPU.

Each worker sees one GPU (CUDA_VISIBLE_DEVICES) and runs one flow run at a
time (`--limit 1`), so a job's stages find exactly one device under "cuda".
The pool's global concurrency limit (one slot per GPU) additionally caps how
many GPU stage tasks run at once across the whole pool.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from flows.server import prefect_exe, server_env


@dataclass
class WorkerSpec:
    name: str
    command: list[str]
    env: dict[str, str]


def parse_gpus(text: str | None) -> list[str]:
    """'0,1' -> ['0', '1']; None or '' -> [] (one CPU worker)."""
    if not text:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus lists a device twice: {text!r}")
    return gpus


def check_gpus(gpus: list[str], allow_cpu: bool = False, visible: int | None = None) -> str | None:
    """Refuse GPU ids this machine does not have (a usage error), or, with `allow_cpu`, return a warning.

    `visible` is the number of CUDA devices (asked of torch when None).
    """
    if not gpus:
        return None
    if visible is None:
        import torch

        visible = torch.cuda.device_count()
    missing = [g for g in gpus if not (g.isdigit() and int(g) < visible)]
    if not missing:
        return None
    message = (f"--gpus {','.join(gpus)}: no CUDA device {', '.join(missing)} on this machine "
               f"({visible} visible)")
    if not allow_cpu:
        raise ValueError(f"{message}; give existing ids, or --allow-cpu to run these workers on the CPU")
    return f"{message}; --allow-cpu: their jobs run on the CPU"


def worker_specs(pool: str, gpus: list[str], host: str | None = None) -> list[WorkerSpec]:
    host = host or socket.gethostname().split(".")[0]
    base = server_env()
    base["PREFECT_API_URL"] = os.environ.get("PREFECT_API_URL", "")
    specs = []
    for device in gpus or [None]:
        name = f"{host}-gpu{device}" if device is not None else f"{host}-cpu"
        env = dict(base)
        # No GPU for a CPU worker, even on a GPU machine: its stages must not grab one unasked.
        env["CUDA_VISIBLE_DEVICES"] = device if device is not None else ""
        cmd = [prefect_exe(), "worker", "start", "--pool", pool, "--type", "process", "--limit", "1",
               "--name", name]
        specs.append(WorkerSpec(name, cmd, env))
    return specs


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM (a graceful stop) when the supervising process dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's own handlers still stop them
        pass


def supervise(specs: list[WorkerSpec], echo=print) -> int:
    """Run the workers until they all exit or we are told to stop; stop them all together.

    A first SIGTERM or SIGINT is a graceful stop: each Prefect worker takes no new flow runs and the exit
    code is 0 (a run in progress still stops with its worker; resubmitting resumes it).
    A second signal stops them at once (their runs resume when resubmitted); the exit code is then 143.
    """
    # Own sessions: a terminal's Ctrl-C reaches the whole group, and Prefect would count it and our
    # forwarded signal as two, i.e. "kill now". They still stop when we die, even by SIGKILL.
    procs = {s.name: subprocess.Popen(s.command, env=s.env, start_new_session=True, preexec_fn=_stop_with_parent)
             for s in specs}
    for s in specs:
        echo(f"worker {s.name} started (pid {procs[s.name].pid}, CUDA_VISIBLE_DEVICES="
             f"{s.env['CUDA_VISIBLE_DEVICES'] or 'none'})")
    signals: list[int] = []

    def stop(signum, _frame):
        signals.append(signum)
        if len(signals) == 1:
            echo("stopping: no new runs (signal again to stop now)")
        for p in procs.values():
            if p.poll() is None:
                # Prefect's worker: a first SIGTERM stops polling and waits for its runs; a second kills it.
                p.send_signal(signal.SIGTERM)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if len(signals) > 1:
        return 128 + signal.SIGTERM
    if signals:
        echo("workers stopped")
        return 0
    failed = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    for name, code in failed.items():
        echo(f"worker {name} exited with code {code}")
    return 1 if failed else 0
