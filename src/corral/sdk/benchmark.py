"""``python -m corral.sdk.benchmark``: what a job of kind ``benchmark`` runs.

A model's inference latency and throughput over batch sizes, from a config in the IPFS
testing framework's shape (the job's params)::

    {"model": "resnet18", "batch_sizes": [1, 2, 4, 8, 16], "precision": "fp32",
     "iterations": 10, "warmup": 3, "optimize_for": "throughput"}

Models are built here, never downloaded: ``mlp``, ``cnn`` and ``transformer`` (a
``torch.nn.TransformerEncoder`` sized by ``layers``, ``d_model``, ``heads`` and
``seq_len``), or any torchvision architecture by name with ``weights=None`` when torchvision
is installed. ``precision`` is ``fp32``, ``fp16``, ``bf16`` (the model and its input in that
type) or ``amp`` (autocast: fp16 on a GPU, bf16 on a CPU), as ``--mixed-precision`` does.
``optimize_for``: ``throughput`` lets cuDNN pick its fastest kernels for the shapes
(``cudnn.benchmark``) and keeps image models channels-last; ``latency`` does neither, so each
call's time is what a first request of that shape would see. Each batch size runs
``warmup`` untimed iterations, then ``iterations`` timed ones: with CUDA events on a GPU,
with the wall clock on a CPU (the result says which). The result holds each batch size's
latency percentiles and items per second; a table of them is printed, and each batch size
is reported (``corral.sdk.report``) as it finishes.

Needs torch (``pip install torch``).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from typing import Any

from corral import sdk

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
BUILT_IN = ("mlp", "cnn", "transformer")
_DEFAULTS: dict[str, Any] = {
    "batch_sizes": [1, 2, 4, 8, 16], "precision": "fp32", "iterations": 10, "warmup": 3,
    "optimize_for": "throughput",
}  # fmt: skip


class BadConfig(ValueError):
    pass


def _check(config: dict[str, Any]) -> dict[str, Any]:
    c = {**_DEFAULTS, **config}
    if not isinstance(c.get("model"), str) or not c["model"]:
        raise BadConfig('name the model: {"model": "resnet18"} (or mlp, cnn, transformer)')
    sizes = c["batch_sizes"]
    if not (isinstance(sizes, list) and sizes and all(isinstance(b, int) and 0 < b <= 65536
                                                      for b in sizes)):  # fmt: skip
        raise BadConfig("batch_sizes: a list of whole numbers from 1 to 65536")
    if c["precision"] not in PRECISIONS:
        raise BadConfig(f"precision: one of {', '.join(PRECISIONS)}, not {c['precision']!r}")
    if c["optimize_for"] not in ("throughput", "latency"):
        raise BadConfig("optimize_for: throughput or latency")
    for key, low in (("iterations", 1), ("warmup", 0)):
        if not isinstance(c[key], int) or not low <= c[key] <= 100_000:
            raise BadConfig(f"{key}: a whole number from {low} to 100000")
    return c


def _model(torch: Any, c: dict[str, Any]) -> tuple[Any, Any]:
    """The model and a function of the batch size that makes its input."""
    nn, name = torch.nn, c["model"]
    if name == "mlp":
        width = int(c.get("width", 512))
        model = nn.Sequential(nn.Linear(width, width * 2), nn.ReLU(), nn.Linear(width * 2, 10))
        return model, lambda b: torch.randn(b, width)
    if name == "cnn":
        size = int(c.get("image_size", 64))
        model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))  # fmt: skip
        return model, lambda b: torch.randn(b, 3, size, size)
    if name == "transformer":
        d, seq = int(c.get("d_model", 256)), int(c.get("seq_len", 128))
        layer = nn.TransformerEncoderLayer(d, int(c.get("heads", 4)), d * 4, batch_first=True)
        model = nn.TransformerEncoder(layer, int(c.get("layers", 2)), enable_nested_tensor=False)
        return model, lambda b: torch.randn(b, seq, d)
    try:
        import torchvision
    except ImportError:
        raise BadConfig(f"model {name!r}: not one of {', '.join(BUILT_IN)}, and torchvision"
                        " (for its architectures) is not installed") from None  # fmt: skip
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise BadConfig(f"model {name!r}: {exc}") from None
    size = int(c.get("image_size", 224))
    return model, lambda b: torch.randn(b, 3, size, size)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run(config: dict[str, Any]) -> dict[str, Any]:
    import torch  # the job's, not corral's: imported only here

    event: Any = torch.cuda.Event  # untyped in torch

    c = _check(config)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = c["optimize_for"] == "throughput"
    model, make_input = _model(torch, c)
    model = model.to(device).eval()
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    channels_last = convolutional and c["optimize_for"] == "throughput"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(c["precision"])
    if dtype is not None:
        model = model.to(dtype)
    autocast_dtype = torch.float16 if cuda else torch.bfloat16
    rows = []
    for batch in c["batch_sizes"]:
        x = make_input(batch).to(device)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        if dtype is not None:
            x = x.to(dtype)

        def once(x: Any = x) -> None:
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=autocast_dtype, enabled=c["precision"] == "amp"),
            ):
                model(x)

        for _ in range(c["warmup"]):
            once()
        times = []
        for _ in range(c["iterations"]):
            if cuda:
                start, end = event(enable_timing=True), event(enable_timing=True)
                start.record()
                once()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                once()
                times.append((time.perf_counter() - t0) * 1000)
        mean = sum(times) / len(times)
        row = {"batch_size": batch, "iterations": len(times),
               "latency_ms": {"p50": _percentile(times, 0.5), "p90": _percentile(times, 0.9),
                              "p99": _percentile(times, 0.99), "mean": mean},
               "throughput_items_s": batch / (mean / 1000)}  # fmt: skip
        rows.append(row)
        sdk.report(step=batch, latency_ms_p50=row["latency_ms"]["p50"],
                   throughput_items_s=row["throughput_items_s"])  # fmt: skip
    name = torch.cuda.get_device_name(0) if cuda else _cpu_name()
    return {
        "model": c["model"], "precision": c["precision"], "optimize_for": c["optimize_for"],
        "device": f"{device.type}: {name}",
        "timing": "CUDA events" if cuda else "wall clock (CPU: no CUDA device)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__, "results": rows,
    }  # fmt: skip


def _table(result: dict[str, Any]) -> str:
    head = f"{result['model']} {result['precision']} on {result['device']} ({result['timing']})"
    lines = [head, f"{'batch':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'items/s':>11}"]
    for r in result["results"]:
        lat = r["latency_ms"]
        lines.append(f"{r['batch_size']:>6} {lat['p50']:>9.3f} {lat['p90']:>9.3f}"
                     f" {lat['p99']:>9.3f} {r['throughput_items_s']:>11.1f}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    try:
        result = run(sdk.context().params)
    except BadConfig as exc:
        print(f"corral.sdk.benchmark: bad config: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(_table(result), flush=True)
    if sdk.job_id():
        sdk.set_result(result)
    else:  # by hand: the result on stdout, for a script to read
        print(json.dumps(result))


if __name__ == "__main__":
    main()
