"""Model table: size, compute and speed of every registered architecture (``spineseg-train models``).

Per architecture, built with its default arch args (or the ones passed):

- parameters (millions);
- GFLOPs of one forward pass at ``flops_size``³ (128³), counted by ``torch.utils.flop_counter.FlopCounterMode``
  on the *meta* device (shapes only: no memory, no compute, so 128³ is cheap on any machine). The counter
  counts a multiply-add as 2 FLOPs and covers matmuls, convolutions and attention, not element-wise ops or
  norms. If a model cannot run on meta, it is counted on CPU at ``fallback_size``³ and scaled by the voxel
  ratio (the row's ``flops_note`` says so; exact for convolutions, an underestimate for global attention);
- CPU latency at ``latency_size``³ (96³): median of ``latency_runs`` forward passes under
  ``torch.inference_mode`` after one warm-up, batch 1, with the process's torch thread count;
- with CUDA: volumes/s at ``flops_size``³ under FP16 autocast (batch 1) and the peak GPU memory of that pass.

Only the inference path is measured: Vertebraformer's identification head runs when boxes are given, so it
is not included (it is small: RoIAlign + an MLP per vertebra).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode

from SpineSegLib.networks import available_architectures, build_network


def _round_up(size: int, divisor: int) -> int:
    return -(-size // divisor) * divisor


def _seg_forward(net: torch.nn.Module, x: torch.Tensor) -> None:
    net(x)


def count_gflops(build: Callable[[], torch.nn.Module], size: int, in_channels: int = 1,
                 fallback_size: int = 64) -> tuple[float, str]:
    """(GFLOPs of one forward at ``size``³, note). Meta device first, then CPU at ``fallback_size``³ scaled."""
    try:
        # Built on CPU then moved: some constructors call .item() (MONAI Swin), which meta tensors cannot do.
        net = build().eval().to("meta")
        x = torch.empty(1, in_channels, size, size, size, device="meta")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            _seg_forward(net, x)
        return counter.get_total_flops() / 1e9, ""
    except Exception as error:  # some op without a meta kernel: count a smaller real pass instead
        net = build().eval()
        divisor = getattr(net, "size_divisor", 1)
        small = _round_up(fallback_size, divisor)
        x = torch.zeros(1, in_channels, small, small, small)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            _seg_forward(net, x)
        scale = (size / small) ** 3
        note = f"counted at {small}³ ×{scale:g} ({type(error).__name__} on meta)"
        return counter.get_total_flops() * scale / 1e9, note


def cpu_latency(net: torch.nn.Module, size: int, in_channels: int = 1, runs: int = 3) -> float:
    """Median seconds of a batch-1 forward at ``size``³ on CPU (after one warm-up pass)."""
    net = net.to("cpu").eval()
    x = torch.randn(1, in_channels, size, size, size)
    times = []
    with torch.inference_mode():
        _seg_forward(net, x)
        for _ in range(runs):
            start = time.perf_counter()
            _seg_forward(net, x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def gpu_throughput(net: torch.nn.Module, size: int, in_channels: int = 1, runs: int = 10,
                   warmup: int = 3) -> tuple[float, float]:
    """(volumes/s, peak GiB) of batch-1 FP16-autocast forwards at ``size``³ on the current CUDA device."""
    net = net.to("cuda").eval()
    x = torch.randn(1, in_channels, size, size, size, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        for _ in range(warmup):
            _seg_forward(net, x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(runs):
            _seg_forward(net, x)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    net.to("cpu")
    torch.cuda.empty_cache()
    return runs / elapsed, peak


def model_table(arch_ids: Iterable[str] | None = None, *, in_channels: int = 1, num_classes: int = 28,
                num_lesion_classes: int = 3, arch_args: Mapping[str, Mapping] | None = None,
                flops_size: int = 128, latency_size: int = 96, latency_runs: int = 3, fallback_size: int = 64,
                gpu: bool | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row (dict) per architecture; ``arch_args`` maps an id to the arch args to build it with.

    Keys: ``id``, ``description``, ``params_m``, ``gflops``, ``flops_size``, ``flops_note``, ``cpu_latency_s``,
    ``latency_size``, and with CUDA (``gpu`` None = if available) ``gpu_volumes_per_s``, ``gpu_peak_gib``.
    Sizes are rounded up to the architecture's ``size_divisor``.
    """
    descriptions = available_architectures()
    ids = list(arch_ids) if arch_ids is not None else list(descriptions)
    gpu = torch.cuda.is_available() if gpu is None else gpu
    rows = []
    for arch_id in ids:
        if progress:
            progress(arch_id)
        kwargs = dict((arch_args or {}).get(arch_id, {}))

        def build(arch_id=arch_id, kwargs=kwargs):
            return build_network(arch_id, in_channels, num_classes, num_lesion_classes, **kwargs)

        net = build()
        divisor = getattr(net, "size_divisor", 1)
        f_size, l_size = _round_up(flops_size, divisor), _round_up(latency_size, divisor)
        gflops, note = count_gflops(build, f_size, in_channels, fallback_size)
        row = {
            "id": arch_id,
            "description": descriptions.get(arch_id, ""),
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "gflops": gflops,
            "flops_size": f_size,
            "flops_note": note,
            "cpu_latency_s": cpu_latency(net, l_size, in_channels, latency_runs),
            "latency_size": l_size,
        }
        if gpu:
            row["gpu_volumes_per_s"], row["gpu_peak_gib"] = gpu_throughput(net, f_size, in_channels)
        rows.append(row)
    return rows


def format_model_table(rows: list[dict]) -> str:
    """Markdown table of :func:`model_table` rows (GPU columns only if measured), with footnotes."""
    gpu = any("gpu_volumes_per_s" in r for r in rows)
    f_size = rows[0]["flops_size"] if rows else 128
    l_size = rows[0]["latency_size"] if rows else 96
    header = ["architecture", "params (M)", f"GFLOPs @ {f_size}³", f"CPU latency @ {l_size}³ (s)"]
    if gpu:
        header += [f"GPU FP16 vol/s @ {f_size}³", "GPU peak memory (GiB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    notes = []
    for r in rows:
        flops = f"{r['gflops']:.1f}"
        if r.get("flops_note"):
            notes.append(f"{r['id']}: FLOPs {r['flops_note']}")
            flops += f"[^{len(notes)}]"
        cells = [f"`{r['id']}`", f"{r['params_m']:.2f}", flops, f"{r['cpu_latency_s']:.2f}"]
        if gpu:
            cells += [f"{r['gpu_volumes_per_s']:.1f}" if "gpu_volumes_per_s" in r else "–",
                      f"{r['gpu_peak_gib']:.2f}" if "gpu_peak_gib" in r else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("FLOPs: FlopCounterMode (multiply-add = 2 FLOPs; matmul/conv/attention only), batch 1. "
                 "CPU latency: median, batch 1, torch.inference_mode.")
    lines += [f"[^{i}]: {n}" for i, n in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"
