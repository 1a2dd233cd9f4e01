"""Markdown / notes of ``benchmarks/train_step.py`` (kept apart from the measuring code)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from ssl_core.train.flops import BF16_PEAK_TFLOPS


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": cores,
        "cpu_model": model,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


ATTN_TEXT = {
    "dense": "dense (SDPA with an S x S boolean block-diagonal mask: every tile computed)",
    "flex": "flex (compiled flex_attention with a document BlockMask: cross-crop "
    "128 x 128 tiles skipped)",
    "naive": "naive (one forward per resolution)",
}


def _packed_attention(doc: dict[str, Any]) -> str:
    """The attention path ``packed=True`` resolved to in this run (one per device)."""
    kinds = sorted({r.get("packed_attention", "?") for r in doc["results"]})
    return " / ".join(kinds) or "?"


def _measures_line(doc: dict[str, Any]) -> str:
    """What the img/s columns compare on this device, and what is FLOPs only."""
    kind = _packed_attention(doc)
    text = f"- packed path: `train_step(..., packed=True)` ran {ATTN_TEXT.get(kind, kind)} here. "
    if kind == "dense":
        return text + (
            "So this run measures naive vs dense-packed img/s; flex-packed (block skipping) is "
            "CUDA-only (eager flex_attention on CPU computes every tile and has no backward), so "
            "its attention columns are FLOPs only, not a measurement."
        )
    return text + (
        f"So this run measures naive vs {kind}-packed img/s; the other packed path's attention "
        "columns are FLOPs only."
    )


def _header(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    la0, la1 = doc["loadavg_start"], doc["loadavg_end"]
    return [
        f"# Training-step benchmark ({doc['device']}): packed vs naive multi-crop",
        "",
        f"- command: `{doc['command']}`",
        f"- machine: {m['machine']}, nproc {m['nproc']}, CPU {m['cpu_model']}, "
        f"GPU {m['cuda'] or 'none'}; torch {m['torch']} ({m['torch_threads']} threads, "
        f"OMP_WAIT_POLICY={m['omp_wait_policy']})",
        f"- date: {doc['date']}; wall time {doc['wall_s']:.0f} s; load average (1/5/15 min) "
        f"{la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f} at start, {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f} "
        "at end",
        "- step: `train_step` (student multi-crop fwd+bwd, EMA-teacher fwd, Sinkhorn, DINO+iBOT+"
        "KoLeo, AdamW, clip, EMA); crops precomputed (augmentation not timed); drop-path 0; "
        "4 registers",
        "- timing: warm-up steps per path excluded, then R rounds x S timed steps per path, "
        "packed/naive alternating (order flipped every round); img/s = median over rounds; "
        "ratio = median of the per-round packed/naive ratios",
        _measures_line(doc),
        "- attention FLOPs: the `q k^T` and `attn v` matmuls of one step (student fwd+bwd = 3x "
        "fwd, plus the teacher's fwd on the globals, naive on every path) with the student's "
        "crops in the packed rows `pack` builds; per path naive / dense / flex "
        "(`ssl_core.train.flops.attention_flops`, flex at 128-token tiles); formula in the "
        "module docstring of `benchmarks/train_step.py`",
        "",
        "| preset | crops (px) | batch | R x S (warm-up) | tokens G / L / packed row | img/s packed | img/s naive "
        "| packed / naive | per-round ratios | loss packed / naive (rel diff) | GFLOP/step "
        "| TFLOP/s p / n | MFU p / n | peak mem packed / naive (MB) "
        "| attn GFLOP/step naive / dense / flex | attn dense / naive | attn flex / naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def _mem_text(r: dict[str, Any], device: str) -> str:
    mem = r.get("memory", {})
    key = "cuda_peak_mb" if device.startswith("cuda") else "rss_peak_mb"
    mp, mn = mem.get("packed", {}), mem.get("naive", {})
    if not (mp and mn):
        return "-"
    memtxt = f"{mp[key]:.0f} / {mn[key]:.0f}"
    if key == "rss_peak_mb" and mp.get("rss_increase_mb") is not None:
        memtxt += f" (+{mp['rss_increase_mb']:.0f} / +{mn['rss_increase_mb']:.0f})"
    return memtxt


def _attn_cells(r: dict[str, Any]) -> str:
    if r.get("attn_flops_naive") is None:
        return "| - | - | - |"
    g = " / ".join(f"{r[f'attn_flops_{k}'] / 1e9:.2f}" for k in ("naive", "dense", "flex"))
    return f"| {g} | {r['attn_dense_over_naive']:.2f}x | {r['attn_flex_over_naive']:.2f}x |"


def _row(r: dict[str, Any], device: str) -> str:
    mfu = (
        f"{_f(r['mfu_packed'] and 100 * r['mfu_packed'])}% / "
        f"{_f(r['mfu_naive'] and 100 * r['mfu_naive'])}%"
        if r["mfu_packed"] is not None
        else "- (no GPU)"
    )
    return (
        f"| {r['preset']} | 2x{r['global_px']} + {r['n_local']}x{r['local_px']} "
        f"| {r['batch']} | {r['repeats']} x {r['steps']} ({r['warmup']}) "
        f"| {r['tokens_global']} / {r['tokens_local']} / "
        f"{r['packed_row_tokens']} | {r['img_s_packed']:.2f} | {r['img_s_naive']:.2f} "
        f"| **{r['ratio_packed_over_naive']:.2f}x** "
        f"| {', '.join(f'{x:.2f}' for x in r['ratios'])} "
        f"| {r['loss_packed']:.6f} / {r['loss_naive']:.6f} ({r['loss_rel_diff']:.1e}) "
        f"| {r['flops_per_step'] / 1e9:.1f} | {r['tflops_packed']:.3f} / "
        f"{r['tflops_naive']:.3f} | {mfu} | {_mem_text(r, device)} {_attn_cells(r)}"
    )


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    lines = _header(doc) + [_row(r, doc["device"]) for r in doc["results"]]
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in doc.get("notes", [])]
    if doc.get("conclusion"):
        lines += ["", "## Conclusion", "", doc["conclusion"]]
    path.write_text("\n".join(lines) + "\n")


def _auto_notes(doc: dict[str, Any]) -> list[str]:
    notes = [
        "Peak memory: "
        + (
            "`torch.cuda.max_memory_allocated` of a fresh subprocess per (preset, path)."
            if doc["device"].startswith("cuda")
            else "peak RSS of a fresh subprocess per (preset, path) running "
            f"{doc['memory_steps']} steps, read from `VmHWM` rather than `ru_maxrss` (a child's "
            "`ru_maxrss` keeps the parent's RSS at fork, and the parent holds both models; "
            "`ru_maxrss_mb` is in the JSON); '+N' = step peak (high-water mark reset after the "
            "build) minus the RSS right after the model, optimiser and crops were built: "
            "activations, gradients and AdamW state."
        ),
        "Packed row: all crops of gcd(2B, n_l B) / B images share one sequence; with the dense "
        "block-diagonal boolean mask its attention does (row tokens)^2 work instead of "
        "sum(crop tokens^2), with flex only the 128 x 128 tiles that hold a same-image pair.",
        *_attn_share_notes(doc),
        "FLOPs/MFU formula: module docstring of `benchmarks/train_step.py` (model FLOPs, same for "
        "both paths). bf16 dense peaks used for MFU: "
        + ", ".join(f"{k} {v:g}" for k, v in BF16_PEAK_TFLOPS.items())
        + " TFLOP/s.",
    ]
    if not doc["device"].startswith("cuda"):
        notes.append(
            "GPU: not measured this session (no GPU was lent to this task); the CUDA path "
            "(bf16 autocast, 2x224 + 8x98 for S/14 and B/14, MFU) is implemented but unrun: "
            "`python benchmarks/train_step.py --device cuda --presets small base`, run by "
            "`benchmarks/gpu_check.py` (docs/training.md#gpu-check-benchmarksgpu_checkpy)."
        )
    if doc.get("size") is not None:
        notes.append(
            f"small/base ran at {doc['size']} px globals (locals scaled as DINOv2's 224 -> 98), "
            "not 224/98, to fit the CPU time budget."
        )
    return notes


def _attn_share_notes(doc: dict[str, Any]) -> list[str]:
    """How much of the step's model FLOPs the attention is, and what packing adds to it."""
    rs = [r for r in doc["results"] if r.get("attn_flops_naive") is not None]
    if not rs:
        return []
    parts = [
        f"{r['preset']} {100 * r['attn_flops_naive'] / r['flops_per_step']:.1f} % "
        f"(+{100 * (r['attn_flops_dense'] - r['attn_flops_naive']) / r['flops_per_step']:.1f} / "
        f"+{100 * (r['attn_flops_flex'] - r['attn_flops_naive']) / r['flops_per_step']:.1f} %)"
        for r in rs
    ]
    return [
        "Attention share: naive attention FLOPs as a share of the step's model FLOPs (GFLOP/step), "
        "and in brackets the extra work dense / flex packing adds, same unit: "
        + "; ".join(parts)
        + "."
    ]


def _auto_conclusion(doc: dict[str, Any]) -> str:
    """One paragraph from the numbers: which path is faster here, and what that says about
    ``packed: auto``."""
    rs = doc["results"]
    if not rs:
        return ""
    on_cuda = doc["device"].startswith("cuda")
    parts = [
        f"{r['preset']} {r['ratio_packed_over_naive']:.2f}x "
        f"(rounds {min(r['ratios']):.2f}-{max(r['ratios']):.2f})"
        for r in rs
    ]
    where = "on this GPU" if on_cuda else f"on this {doc['machine']['nproc']}-core CPU"
    naive_w = [r["preset"] for r in rs if max(r["ratios"]) < 1.0]
    packed_w = [r["preset"] for r in rs if min(r["ratios"]) > 1.0]
    ties = [r["preset"] for r in rs if r["preset"] not in naive_w + packed_w]
    verdict = []
    if naive_w:
        verdict.append(f"naive is faster in every round for {', '.join(naive_w)}")
    if packed_w:
        verdict.append(f"packed is faster in every round for {', '.join(packed_w)}")
    if ties:
        verdict.append(f"no consistent difference for {', '.join(ties)} (rounds straddle 1)")
    text = (
        f"Packed / naive throughput {where}: {'; '.join(parts)}. So "
        + "; ".join(verdict)
        + ". First-step losses agree (largest relative difference "
        f"{max(r['loss_rel_diff'] for r in rs):.1e}; grad norms "
        f"{max(r['grad_norm_rel_diff'] for r in rs):.1e}), so both paths compute the same step. "
    )
    slower, faster = naive_w, packed_w
    if not on_cuda:
        text += (
            "On CPU packing has no kernel-launch overhead to amortise, while each packed row pays "
            "(row tokens)^2 attention over the whole row instead of sum(crop tokens^2) "
            f"(e.g. {rs[-1]['packed_row_tokens']} vs {rs[-1]['tokens_global']} + "
            f"{rs[-1]['n_local'] // 2 if rs[-1]['n_local'] % 2 == 0 else rs[-1]['n_local']} x "
            f"{rs[-1]['tokens_local']} tokens for {rs[-1]['preset']}"
            + _attn_ratio_text(rs[-1])
            + "). `packed: auto` (naive on every device until a GPU measurement shows packing "
            "faster) "
            + _auto_verdict_cpu(rs, slower, faster)
            + "Packed on CUDA (flex, block skipping) was not measured this session: no GPU "
            "was lent, so whether packing pays off on H100/H200 remains to be checked "
            "(`benchmarks/gpu_check.py`, or `--device cuda`)."
        )
    return text


def _auto_verdict_cpu(rs: list[dict[str, Any]], slower: list[str], faster: list[str]) -> str:
    """What the CPU rounds say about ``packed: auto`` (naive everywhere until measured)."""
    if faster:
        return f"is not right on CPU for every recipe (packed wins for {', '.join(faster)}). "
    if len(slower) == len(rs):
        return "is therefore right on CPU. "
    if slower:
        return (
            f"is right on CPU for {', '.join(slower)} and costs nothing measurable for the "
            "others (packed is never clearly faster). "
        )
    return "costs nothing measurable on CPU (packed is never clearly faster here). "


def _attn_ratio_text(r: dict[str, Any]) -> str:
    if r.get("attn_flops_naive") is None:
        return ""
    return (
        f": {r['attn_dense_over_naive']:.2f}x the naive attention FLOPs per step dense, "
        f"{r['attn_flex_over_naive']:.2f}x flex"
    )
