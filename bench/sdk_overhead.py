"""What ``corral.sdk.report`` costs a real training loop, called every step.

    .venv/bin/python bench/sdk_overhead.py --steps 2000 --rounds 5

A PyTorch MLP (256-512-512-2, AdamW, batches of 128) trains on a synthetic classification
set (CPU, one thread), and times its own loop; each step computes its loss and accuracy as
a loop that logs its progress does, and only the report differs between runs. It runs in
rounds, alternating, so the machine's drift falls on all: by hand without
``report`` (the script as it would be), by hand calling ``report(step=…, loss=…,
accuracy=…)`` every step (its output to a file, as a worker keeps it), and as a job on a real
fleet (a coordinator and one worker on this machine) calling it every step, so the worker
ships each metric line and the coordinator stores each point. Prints the median loop time
of each and the ratios, and writes bench/results/sdk-overhead-<time>.json.
Needs torch (``pip install torch``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness_e2e import Fleet, wait_until  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()

TRAIN = """\
import json, os, sys, time
import torch
from corral import sdk

torch.set_num_threads(1)
torch.manual_seed(0)
steps, report = int(sys.argv[1]), sys.argv[2] == "report"
x = torch.randn(8192, 256)
y = (x[:, :16].sum(1) > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(),
                            torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 2))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
start = time.perf_counter()
for step in range(steps):
    i = (step * 128) % 8192
    xb, yb = x[i:i + 128], y[i:i + 128]
    out = model(xb)
    loss = torch.nn.functional.cross_entropy(out, yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    # What a loop that logs its progress computes either way; only the report differs.
    value, acc = loss.item(), (out.argmax(1) == yb).float().mean().item()
    if report:
        sdk.report(step=step, loss=value, accuracy=acc)
loop_s = time.perf_counter() - start
sdk.set_result({"loop_s": loop_s})
print(json.dumps({"loop_s": loop_s}))
"""


CALLS = """\
import sys, time
from corral import sdk
n = int(sys.argv[1])
start = time.perf_counter()
for step in range(n):
    sdk.report(step=step, loss=0.6931 - step * 1e-6, accuracy=0.5)
print("us", (time.perf_counter() - start) / n * 1e6)
"""


def _one_call_us(root_for_calls: Path, n: int = 50_000) -> float:
    """report()'s own cost, in a loop that does nothing else (its output to a file)."""
    with tempfile.NamedTemporaryFile("w+", dir=root_for_calls, suffix=".log") as log:
        subprocess.run([sys.executable, "-c", CALLS, str(n)], stdout=log, check=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        log.seek(0)
        last = log.read().splitlines()[-1]
    return float(last.split()[1])


def main(
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = 2000,
    rounds: Annotated[int, typer.Option(help="Pairs of runs.")] = 3,
) -> None:
    with tempfile.TemporaryDirectory(prefix="corral-sdk-bench-") as tmp:
        root = Path(tmp)
        script = root / "train.py"
        script.write_text(TRAIN)
        (root / "fleet").mkdir()
        fleet = Fleet(root / "fleet", "sqlite:///" + str(root / "corral.db"))
        try:
            fleet.start_server()
            fleet.start_worker("w1", slots=1)
            wait_until(lambda: fleet.workers().get("w1", {}).get("status") == "idle", 60)
            direct: list[float] = []
            printed: list[float] = []
            job: list[float] = []
            points = 0
            for n in range(rounds):
                pair = [("plain", direct), ("report", printed)]
                for mode, into in pair if n % 2 == 0 else pair[::-1]:  # neither always first
                    with open(root / "out.log", "w") as log:  # as a worker keeps a job's output
                        subprocess.run([sys.executable, str(script), str(steps), mode],
                                       stdout=log, check=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
                    last = (root / "out.log").read_text().splitlines()[-1]
                    into.append(json.loads(last)["loop_s"])
                sub = fleet.calls.submit([sys.executable, str(script), str(steps), "report"])
                done = fleet.wait_state(sub.id, {"succeeded", "failed"}, seconds=600)
                assert done["state"] == "succeeded", fleet.logs(sub.id)
                job.append(done["result"]["loop_s"])
                job_id = sub.id
                wait_until(lambda: len(fleet.calls.metrics(job_id).get("loss", [])) == steps,  # noqa: B023
                           60, "every point stored")  # fmt: skip
                points += 2 * steps
        finally:
            fleet.close()
    call_us = _one_call_us(root_for_calls=Path(tempfile.gettempdir()))
    d, p, j = statistics.median(direct), statistics.median(printed), statistics.median(job)
    table = Table(title=f"report() every step, {steps} steps, median of {rounds}")
    for col in ("run", "loop s", "per step µs"):
        table.add_column(col)
    table.add_row("by hand, no report", f"{d:.3f}", f"{d / steps * 1e6:.0f}")
    table.add_row("by hand, report every step", f"{p:.3f}", f"{p / steps * 1e6:.0f}")
    table.add_row("as a job, report every step", f"{j:.3f}", f"{j / steps * 1e6:.0f}")
    table.add_row(
        "report's own cost", f"{(p / d - 1) * 100:+.1f} %", f"{(p - d) / steps * 1e6:+.0f}"
    )
    table.add_row("as a job against by hand", f"{(j / d - 1) * 100:+.1f} %",
                  f"{(j - d) / steps * 1e6:+.0f}")  # fmt: skip
    table.add_row("one report() call, alone", f"{call_us / (d / steps * 1e6) * 100:.2f} %"
                  " of a step", f"{call_us:.1f}")  # fmt: skip
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.node(),
        "cpus": os.cpu_count(), "steps": steps, "rounds": rounds, "direct_s": direct,
        "printed_s": printed, "job_s": job, "report_overhead": p / d - 1,
        "overhead": j / d - 1, "points_stored": points // 2, "report_call_us": call_us,
        "report_call_share_of_step": call_us / (d / steps * 1e6),
    }  # fmt: skip
    out_path = RESULTS / f"sdk-overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_path.write_text(json.dumps(doc, indent=2))
    console.print(f"wrote {out_path}")


if __name__ == "__main__":
    typer.run(main)
