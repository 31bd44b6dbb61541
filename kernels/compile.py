"""Compile the kernel variants that real launches produce, for real GPU targets, without a GPU.

The variants are not restated here: :func:`launch_scenarios` runs the launchers of
:mod:`canon.kernels` on ``meta`` tensors of real sizes (B = 256, 224×224 images, 96×96
views, MNIST-sized planes, …) while :func:`canon.kernels.launch.recording` captures each
launch instead of running it. Every captured launch is then specialised exactly as
Triton's JIT specialises a real one (integers equal to 1 become constants, integers and
pointers divisible by 16 get ``tt.divisibility=16``; fresh allocations are 256-byte
aligned, so pointers are) and compiled with ``triton.compile(..., target=GPUTarget("cuda",
arch, 32))``.

:func:`compile_report` is the stable entry point (the compile-gate test and ``python -m
bench kernels`` use it). Run it in a process where ``TRITON_INTERPRET`` is unset (the
interpreter replaces ``@triton.jit`` functions). ``python -m canon.kernels.compile``
prints the report as JSON.

Each row: ``{"name", "variant", "arch", "num_warps", "registers", "spill_stores",
"spill_loads", "local", "stack", "shared", "occupancy", "global_load_bits",
"global_store_bits", "global_atomic_bits", "vector_store", "error"}``: registers/stack/
local/shared from ``cuobjdump --dump-resource-usage`` (bytes for stack/local/shared);
spill stores/loads = count of STL/LDL instructions in the SASS (0 without a stack frame or
local memory: the SASS is then not disassembled); ``occupancy`` = resident
warps per SM / 64 as limited by registers, shared memory and block count (sm_80/sm_90: 64K
registers, 64 warps, 32 blocks, 164/228 KB shared); the sorted sets of widths (bits) of
global loads, stores and reductions/atomics, read from the PTX (``ld``/``st``/``red``/``atom``
``.global``; equal to the SASS's LDG/STG/RED/ATOM on every variant when checked, 2026-12-04); ``vector_store``: the
launch writes row-contiguous, 16-byte aligned rows, so its stores should be 128-bit;
``error`` is None or the compile error text (the other fields are then None).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor

__all__ = ["launch_scenarios", "variants", "compile_report", "compile_one", "occupancy", "sass", "sass_loops"]

_SM = {80: dict(warps=64, blocks=32, shared=164 * 1024), 90: dict(warps=64, blocks=32, shared=228 * 1024)}


def _bin(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def launch_scenarios() -> list[tuple[str, bool, object]]:
    """(label, vector_store, Launch) for every launch the launchers make in the scenarios below."""
    import torch

    from . import resample, select
    from .launch import recording

    meta = torch.device("meta")

    def t(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device=meta)

    def tables(n):
        return t(n, 2, 3), t(n, 10)

    out = []

    def record(label: str, vector_store: bool, fn, *args, **kw):
        sink: list = []
        with recording(sink):
            fn(*args, **kw)
        out.extend((label, vector_store, la) for la in sink)

    B = 256
    f32, bf16, f16, f64 = torch.float32, torch.bfloat16, torch.float16, torch.float64
    # ---- orbit forward: the table, every mode, dtypes, layouts, small planes
    # (aligned: quarter turns of square planes whose side is a multiple of 16 copy 16-aligned runs)
    for label, dt_in, dt_out, n, hw, size, exact, aligned, pad, interp in (
        ("C4 exact 224", f32, f32, 4, 224, 224, True, True, "zeros", "bilinear"),
        ("D4 exact 224", f32, f32, 8, 224, 224, True, True, "zeros", "bilinear"),
        ("C4 exact crop 224->112 (unaligned)", f32, f32, 4, 224, 112, True, False, "zeros", "bilinear"),
        ("C8 bilinear 224", f32, f32, 8, 224, 224, False, True, "zeros", "bilinear"),
        ("C16 224->96 crop border", f32, f32, 16, 224, 96, False, True, "border", "bilinear"),
        ("C8 32->96 crop border", f32, f32, 8, 32, 96, False, True, "border", "bilinear"),
        ("C8 reflection", f32, f32, 8, 224, 224, False, True, "reflection", "bilinear"),
        ("C8 nearest zeros", f32, f32, 8, 224, 224, False, True, "zeros", "nearest"),
        ("C8 nearest border", f32, f32, 8, 224, 96, False, True, "border", "nearest"),
        ("C4 exact border (non-square)", f32, f32, 4, 224, 224, True, False, "border", "bilinear"),
        ("C4 exact reflection (non-square)", f32, f32, 4, 224, 224, True, False, "reflection", "bilinear"),
        ("C4 exact 28 (MNIST)", f32, f32, 4, 28, 28, True, False, "zeros", "bilinear"),
        ("C8 bilinear 28 (MNIST)", f32, f32, 8, 28, 28, False, False, "zeros", "bilinear"),
        ("C4 exact 224 bf16", bf16, bf16, 4, 224, 224, True, True, "zeros", "bilinear"),
        ("C8 bilinear 224 bf16", bf16, bf16, 8, 224, 224, False, True, "zeros", "bilinear"),
        ("C8 bilinear 224 fp16", f16, f16, 8, 224, 224, False, True, "zeros", "bilinear"),
        ("C8 224->96 fp32 in bf16 out", f32, bf16, 8, 224, 96, False, True, "border", "bilinear"),
        ("C8 bilinear 64 fp64", f64, f64, 8, 64, 64, False, True, "zeros", "bilinear"),
    ):
        mats, _ = tables(n)
        out_t = t(B, n, 3, size, size, dtype=dt_out)
        copy = exact and aligned and pad == "zeros"  # row-contiguous 16-byte-aligned copies: 128-bit stores
        record(
            f"orbit {label}",
            copy,
            resample.orbit_forward,
            t(B, 3, hw, hw, dtype=dt_in),
            mats,
            exact,
            aligned,
            (size, size),
            pad,
            interp,
            out_t,
        )
    # quarter-turn families (resample.ORBIT_FAMILIES, off by default): C8 = 2 families, C16 = 4
    for label, dt, n, hw, size, pad in (
        ("C8 bilinear 224", f32, 8, 224, 224, "zeros"),
        ("C16 224->96 crop border", f32, 16, 224, 96, "border"),
        ("C8 bilinear 224 bf16", bf16, 8, 224, 224, "zeros"),
    ):
        mats, _ = tables(n)
        with resample.orbit_families():
            record(
                f"orbit families {label}", False, resample.orbit_forward,
                t(B, 3, hw, hw, dtype=dt), mats, False, True, (size, size), pad, "bilinear",
                t(B, n, 3, size, size, dtype=dt), fam=t(n // 4, 4, dtype=torch.int32),
            )  # fmt: skip
    mats, _ = tables(8)
    cl = torch.empty((B, 8, 96, 96, 3), device=meta).permute(0, 1, 4, 2, 3)
    record(
        "orbit C8 224->96 channels_last out",
        False,
        resample.orbit_forward,
        t(B, 3, 224, 224),
        mats,
        False,
        True,
        (96, 96),
        "border",
        "bilinear",
        cl,
    )
    # ---- antialiased views (views that shrink the input) and their gather adjoint
    for label, dt, n, hw, size, pad in (
        ("C8 224->32 border", f32, 8, 224, 32, "border"),
        ("C16 224->96 zeros", f32, 16, 224, 96, "zeros"),
        ("C8 224->64 bf16 reflection", bf16, 8, 224, 64, "reflection"),
        ("C8 64->32 fp64", f64, 8, 64, 32, "zeros"),
    ):
        mats, pull = tables(n)
        record(
            f"orbit antialias {label}", False, resample.orbit_antialias_forward,
            t(B, 3, hw, hw, dtype=dt), mats, pull, t(n, size, size), 16, (size, size), pad,
            t(B, n, 3, size, size, dtype=dt),
        )  # fmt: skip
        if pad == "zeros":
            record(
                f"orbit antialias backward {label}", False, resample.orbit_antialias_backward,
                t(64, n, 3, size, size, dtype=dt), mats, pull, t(n, size, size), 4, (hw, hw),
                t(64, 3, hw, hw, dtype=dt),
            )  # fmt: skip
    # ---- transform (canonicalize / invert) and the fused eval canonicalization
    idx = t(B, dtype=torch.int64)
    for label, dt, n, exact, pad, interp, C, perm in (
        ("C4 exact 224", f32, 4, True, "zeros", "bilinear", 3, None),
        ("C8 bilinear 224", f32, 8, False, "zeros", "bilinear", 3, None),
        ("C8 border 224", f32, 8, False, "border", "bilinear", 3, None),
        ("C8 nearest 224", f32, 8, False, "zeros", "nearest", 3, None),
        ("C8 bilinear 224 bf16", bf16, 8, False, "zeros", "bilinear", 3, None),
        ("D4 regular invert 64 channels", f32, 8, True, "zeros", "bilinear", 64, t(8, 8, dtype=torch.int64)),
    ):
        mats, _ = tables(n)
        x_t, out_t = t(B, C, 224, 224, dtype=dt), t(B, C, 224, 224, dtype=dt)
        record(
            f"transform {label}",
            exact and pad == "zeros",
            resample.transform_forward,
            x_t,
            idx,
            mats,
            exact,
            True,
            pad,
            interp,
            out_t,
            perm,
        )
    for label, n, exact, D in (
        ("C4 exact 224 D128", 4, True, 128),
        ("C8 bilinear 224 D128", 8, False, 128),
        ("C16 bilinear 224 D512", 16, False, 512),
    ):
        mats, _ = tables(n)
        sel = (t(B, n), t(B, n), idx, t(B, n))
        record(
            f"select_transform {label}", exact, resample.select_transform_forward,
            t(B, n, D), t(D), t(B, 3, 224, 224), mats, exact, True, 1.0, True, "zeros", "bilinear", t(B, 3, 224, 224),
            sel,
        )  # fmt: skip
    # ---- adjoints
    for label, dt, n, hw, size, exact, pad, interp in (
        ("pull C8 224->96 crop", f32, 8, 224, 96, False, "zeros", "bilinear"),
        ("pull C8 224", f32, 8, 224, 224, False, "zeros", "bilinear"),
        ("pull C8 32->96 (upsampling)", f32, 8, 32, 96, False, "zeros", "bilinear"),
        ("pull D4 exact 224", f32, 8, 224, 224, True, "zeros", "bilinear"),
        ("pull C8 nearest", f32, 8, 224, 96, False, "zeros", "nearest"),
        ("pull C8 bf16", bf16, 8, 224, 96, False, "zeros", "bilinear"),
        ("pull C8 fp64", f64, 8, 64, 64, False, "zeros", "bilinear"),
        ("in-range pull + folded scatter C8 border", f32, 8, 224, 96, False, "border", "bilinear"),
        ("scatter C8 32->96 reflection (upsampling)", f32, 8, 32, 96, False, "reflection", "bilinear"),
        ("in-range pull + folded scatter C8 border, bf16", bf16, 8, 224, 96, False, "border", "bilinear"),
        ("scatter C8 reflection nearest", f32, 8, 224, 96, False, "reflection", "nearest"),
        ("in-range pull + folded scatter C4 exact border", f32, 4, 224, 224, True, "border", "bilinear"),
    ):
        mats, pull = tables(n)
        g_t, gx_t = t(64, n, 3, size, size, dtype=dt), t(64, 3, hw, hw, dtype=dt)
        record(
            f"orbit_backward {label}",
            False,
            resample.orbit_backward,
            g_t,
            mats,
            pull,
            exact,
            True,
            (hw, hw),
            pad,
            interp,
            gx_t,
        )
    for label, n, exact, pad, interp, C, perms in (
        ("C8 bilinear 224", 8, False, "zeros", "bilinear", 3, None),
        ("C4 exact 224", 4, True, "zeros", "bilinear", 3, None),
        ("C8 border 224", 8, False, "border", "bilinear", 3, None),
        ("C8 nearest 224", 8, False, "zeros", "nearest", 3, None),
        (
            "D4 regular 64 channels",
            8,
            True,
            "zeros",
            "bilinear",
            64,
            (t(8, 8, dtype=torch.int64), t(8, 8, dtype=torch.int64)),
        ),
    ):
        mats, pull = tables(n)
        perm, inv = perms or (None, None)
        record(
            f"transform_backward {label}", False, resample.transform_backward,
            t(B, C, 224, 224), t(B, C, 224, 224), idx, mats, pull, exact, True, pad, interp, t(B, C, 224, 224), t(B, n),
            perm, inv,
        )  # fmt: skip
        record(
            f"transform_backward {label}, x only (eval)", False, resample.transform_backward,
            t(B, C, 224, 224), t(B, C, 224, 224), idx, mats, pull, exact, True, pad, interp, t(B, C, 224, 224), None,
            perm, inv,
        )  # fmt: skip
    # the inner products by quarter-turn family (resample.ORBIT_FAMILIES, off by default)
    for label, pad in (("C8 bilinear 224", "zeros"), ("C8 border 224", "border")):
        mats, pull = tables(8)
        with resample.orbit_families():
            record(
                f"transform_backward families {label}", False, resample.transform_backward,
                t(B, 3, 224, 224), t(B, 3, 224, 224), idx, mats, pull, False, True, pad, "bilinear",
                t(B, 3, 224, 224), t(B, 8), None, None, t(2, 4, dtype=torch.int32),
            )  # fmt: skip
    # ---- selection
    for n in (4, 8, 16):
        v, r = t(B, n, 128), t(128)
        record(f"select N={n}", False, select.select_forward, v, r)
        record(f"select N={n} gumbel", False, select.select_forward, v, r, noise=t(B, n))
        record(
            f"select N={n} + losses",
            False,
            select.select_forward,
            v,
            r,
            contrastive="normalized",
            prior=select.PRIOR_IDENTITY,
        )
        record(
            f"select N={n} dot + raw + target",
            False,
            select.select_forward,
            v,
            r,
            cosine=False,
            contrastive="raw",
            prior=select.PRIOR_TARGET,
            target=idx,
        )
        record(f"contrastive N={n}", False, select.select_forward, v, None, contrastive="normalized")
        record(f"select_backward N={n}", False, select.select_backward, t(B, n), None, t(B, n), None, v, r, t(B, n))
        record(
            f"select_backward N={n} + losses", False, select.select_backward,
            t(B, n), None, t(B, n), t(2), v, r, t(B, n), contrastive="normalized", prior=select.PRIOR_TARGET,
            target=idx,
        )  # fmt: skip
        record(
            f"contrastive_backward N={n} raw",
            False,
            select.select_backward,
            None,
            None,
            None,
            t(2),
            v,
            None,
            None,
            contrastive="raw",
        )
    return out


def _specialize(la) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of a recorded launch, as the JIT builds them."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.nvidia.compiler import CUDABackend

    fn = la.kernel
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        value = la.args[p.name]
        if p.is_constexpr:
            signature[p.name], constexprs[(i,)] = "constexpr", value
            continue
        ty, attr = native_specialize_impl(CUDABackend, value, False, True, True)
        signature[p.name] = ty
        if ty == "constexpr":  # integers equal to 1
            constexprs[(i,)] = value
        elif isinstance(attr, str) and attr:
            attrs[(i,)] = CUDABackend.parse_attr(attr)
    return signature, constexprs, attrs


def _describe(la) -> str:
    """The launch's meta-parameters (accumulation dtypes left out: they follow the pointers)."""
    names = [p.name for p in la.kernel.params if p.is_constexpr and p.name not in ("ACC", "SCORE_ACC")]
    return ",".join(f"{k}={la.args[k]}" for k in names)


def variants() -> list[dict]:
    """Distinct compilations (kernel, signature, constexprs, attrs, options) of :func:`launch_scenarios`."""
    seen, out = {}, []
    for label, vector_store, la in launch_scenarios():
        sig, cx, attrs = _specialize(la)
        key = (
            la.name,
            tuple(sorted(sig.items())),
            tuple(sorted((k, str(v)) for k, v in cx.items())),
            tuple(sorted((k, str(v)) for k, v in attrs.items())),
            tuple(sorted(la.options.items())),
        )
        if key in seen:
            seen[key]["labels"].append(label)
            seen[key]["vector_store"] |= vector_store
            continue
        v = dict(
            kernel=la.name,
            module=la.kernel.fn.__module__,
            signature=sig,
            constexprs=cx,
            attrs=attrs,
            options=dict(la.options),
            labels=[label],
            vector_store=vector_store,
            desc=_describe(la),
        )
        seen[key] = v
        out.append(v)
    return out


def _parse_usage(text: str) -> dict:
    m = {k: re.search(rf"{k}:(\d+)", text) for k in ("REG", "STACK", "SHARED", "LOCAL")}
    return {k: int(v.group(1)) if v else None for k, v in m.items()}


# bits of a PTX element type
_TYPE_BITS = {f"{k}{n}": n for k in "bfsu" for n in (8, 16, 32, 64)} | {"bf16": 16}


def _ptx_widths(ptx: str, ops: tuple[str, ...]) -> list[int]:
    """Sorted set of access widths (bits: vector length × element bits) of the global ``ops`` in ``ptx``
    (``ld``, ``st``; ``atom``, ``red``). ptxas keeps them: on every variant of 2026-12-04 they equal the
    widths of the SASS's LDG/STG/RED/ATOM, for sm_80 and sm_90."""
    found = set()
    for m in re.finditer(r"\b(?:" + "|".join(ops) + r")\.global((?:\.[A-Za-z0-9_:]+)*)", ptx):
        mods = m.group(1).split(".")
        vec = next((int(x[1:]) for x in mods if x in ("v2", "v4", "v8")), 1)
        bits = next((_TYPE_BITS[x] for x in mods if x in _TYPE_BITS), None)
        if bits is None:
            raise ValueError(f"kernels.compile: no element type in PTX access {m.group(0)!r}")
        found.add(vec * bits)
    return sorted(found)


def occupancy(registers: int, num_warps: int, shared: int, arch: int) -> float:
    """Resident warps per SM / 64 for a kernel using ``registers`` per thread and ``shared`` bytes per block."""
    sm = _SM.get(arch, _SM[90])
    regs_per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256  # allocated per warp in units of 256
    by_regs = (65536 // regs_per_warp) // num_warps
    by_shared = sm["shared"] // shared if shared else sm["blocks"]
    blocks = min(by_regs, by_shared, sm["blocks"], sm["warps"] // num_warps)
    return blocks * num_warps / sm["warps"]


def _compile(v: dict, arch: int):
    """Variant ``v`` of :func:`variants` compiled for sm_``arch`` (a Triton ``CompiledKernel``)."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget

    fn = getattr(importlib.import_module(v["module"]), v["kernel"])
    src = triton.compiler.ASTSource(fn=fn, signature=v["signature"], constexprs=v["constexprs"], attrs=v["attrs"])
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=v["options"])


def _cuobjdump(kernel, option: str) -> str:
    """``cuobjdump OPTION`` of a compiled kernel's cubin."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        return subprocess.run([_bin("cuobjdump"), option, path], capture_output=True, text=True, check=True).stdout


def compile_one(args: tuple[dict, int]) -> dict:
    """Compile one variant for one arch (sm_XX) and measure it; never raises."""
    v, arch = args
    row = dict(
        name=v["kernel"], variant=v["desc"], cases="; ".join(v["labels"]), arch=arch,
        num_warps=v["options"]["num_warps"],
        registers=None, spill_stores=None, spill_loads=None, local=None, stack=None, shared=None, occupancy=None,
        global_load_bits=None, global_store_bits=None, global_atomic_bits=None, vector_store=v["vector_store"],
        error=None,
    )  # fmt: skip
    try:
        k = _compile(v, arch)
        u = _parse_usage(_cuobjdump(k, "--dump-resource-usage"))
        # Local-memory traffic in the SASS: register spills (and any stack-resident arrays). Without a
        # stack frame or local memory there is none, and the disassembly (~0.3 s a kernel, most of
        # the gate's time) is skipped.
        sass = _cuobjdump(k, "-sass") if (u["STACK"] or u["LOCAL"]) else ""
        row.update(registers=u["REG"], stack=u["STACK"], shared=u["SHARED"], local=u["LOCAL"])
        row["spill_stores"] = len(re.findall(r"\bSTL(\.[A-Z0-9]+)*\s", sass))
        row["spill_loads"] = len(re.findall(r"\bLDL(\.[A-Z0-9]+)*\s", sass))
        ptx = k.asm["ptx"]
        row["global_load_bits"] = _ptx_widths(ptx, ("ld",))
        row["global_store_bits"] = _ptx_widths(ptx, ("st",))
        row["global_atomic_bits"] = _ptx_widths(ptx, ("atom", "red"))
        shared = max(u["SHARED"] or 0, getattr(k.metadata, "shared", 0) or 0)
        row["shared"] = shared
        row["occupancy"] = round(occupancy(u["REG"], v["options"]["num_warps"], shared, arch), 4)
    except Exception as e:  # reported, not raised: the gate decides
        row["error"] = f"{type(e).__name__}: {e}"[:2000]
    return row


def sass(variant: dict, arch: int) -> str:
    """The SASS of one variant of :func:`variants` compiled for sm_``arch`` (``cuobjdump -sass``)."""
    return _cuobjdump(_compile(variant, arch), "-sass")


def sass_loops(text: str) -> list[dict]:
    """The loops of a kernel's SASS: one dict per backward branch, ``{"start", "end"}`` (byte addresses of the
    branch target and the branch), ``instructions`` (in that range), ``barriers`` (``BAR`` among them) and
    ``inner`` (whether no other loop lies inside it), in address order of the branches."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;/]*?)\s*;", text)]
    spans = []
    for addr, op in ins:
        m = re.search(r"\bBRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", op)
        if m and int(m.group(1), 16) < addr:  # (a branch to itself is the end-of-kernel trap, not a loop)
            spans.append((int(m.group(1), 16), addr))
    loops = []
    for a, b in spans:
        body = [op for addr, op in ins if a <= addr <= b]
        inner = not any((c, d) != (a, b) and a <= c and d <= b for c, d in spans)
        barriers = sum(1 for op in body if re.match(r"(@!?U?P\w+\s+)?BAR\b", op))
        loops.append(dict(start=a, end=b, instructions=len(body), barriers=barriers, inner=inner))
    return loops


def compile_report(archs: tuple[int, ...] = (80, 90), jobs: int | None = None) -> list[dict]:
    """Compile every variant of :func:`variants` for each arch in ``archs``; one row per kernel×variant×arch.

    ``jobs`` worker processes (default: CPU count, at most 8). Needs ``TRITON_INTERPRET``
    unset in this process (raises RuntimeError otherwise).
    """
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError(
            "canon.kernels.compile.compile_report: unset TRITON_INTERPRET (the interpreter replaces the kernels)"
        )
    work = [(v, a) for v in variants() for a in archs]
    jobs = jobs or min(8, os.cpu_count() or 1)
    if jobs <= 1:
        return [compile_one(w) for w in work]
    with ProcessPoolExecutor(jobs) as ex:
        return list(ex.map(compile_one, work))


if __name__ == "__main__":
    print(json.dumps(compile_report(), indent=1))
