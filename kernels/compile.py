"""Compile every kernel variant in use for real GPU targets, without a GPU, and report resources.

:func:`compile_report` is the stable entry point (the compile-gate test and
``python -m bench kernels`` use it). Run it in a process where ``TRITON_INTERPRET`` is
unset: the interpreter replaces ``@triton.jit`` functions. ``python -m canon.kernels.compile``
prints the report as JSON.

Each row: ``{"name", "variant", "arch", "registers", "spill_stores", "spill_loads",
"local", "stack", "shared", "global_load_bits", "global_store_bits", "global_atomic_bits", "error"}``:
registers/stack/local/shared from ``cuobjdump --dump-resource-usage`` (bytes for
stack/local/shared), spill stores/loads = count of STL/LDL instructions in the SASS, and the sorted set of widths
(bits) of global loads (LDG), stores (STG) and reductions/atomics (RED, REDG, ATOM, ATOMG) in the SASS. ``error`` is None or the
compile error text (the other fields are then None).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor

__all__ = ["variants", "compile_report", "compile_one"]

_PTR_DT = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16", "fp64": "*fp64"}


def _bin(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def variants() -> list[dict]:
    """The kernel variants that the launchers in :mod:`kernels` actually produce.

    Mode constexprs (padding × interpolation × exact) are covered in full for fp32; the
    fp16/bf16 I/O variants once each (their code differs only in load/store casts).
    Block sizes are the largest :func:`resample_config`/:func:`scores_config` give.
    """
    import triton.language as tl

    from .resample import resample_config

    out = []
    modes = [(pad, near, ex) for pad in (0, 1, 2) for near, ex in ((False, False), (True, False), (False, True))]
    rs_ints = lambda names: {n: "i32" for n in names}  # noqa: E731
    for dt_in, dt_out in (("fp32", "fp32"), ("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp16")):
        for use_index in (False, True):
            for pad, near, ex in modes if (dt_in, dt_out) == ("fp32", "fp32") else [(0, False, False), (0, False, True)]:
                sig = {"x_ptr": _PTR_DT[dt_in], "mats_ptr": "*fp32", "index_ptr": "*i64", "out_ptr": _PTR_DT[dt_out]}
                sig.update(rs_ints(["sx_b", "sx_c", "sx_h", "sx_w", "so_b", "so_n", "so_c", "so_h", "so_w", "C", "H", "W", "h", "w", "NV"]))
                cx = {"PADDING": pad, "NEAREST": near, "EXACT": ex, "USE_INDEX": use_index, "OUT_CONTIG": True, "ACC": tl.float32, "BLOCK": 1024}
                out.append(dict(kernel="resample_kernel", signature=sig, constexprs=cx, num_warps=8))
    for pad, near, ex in modes:
        sig = {"g_ptr": "*fp32", "mats_ptr": "*fp32", "index_ptr": "*i64", "gx_ptr": "*fp32"}
        sig.update(rs_ints(["sg_b", "sg_n", "sg_c", "sg_h", "sg_w", "C", "H", "W", "h", "w", "NV"]))
        cx = {"PADDING": pad, "NEAREST": near, "EXACT": ex, "USE_INDEX": False, "ACC": tl.float32, "BLOCK": 1024}
        out.append(dict(kernel="resample_push_kernel", signature=sig, constexprs=cx, num_warps=8))
    for dt in ("fp32", "fp16", "bf16"):
        sig = {"g_ptr": _PTR_DT[dt], "mats_ptr": "*fp32", "index_ptr": "*i64", "gx_ptr": _PTR_DT[dt]}
        sig.update(rs_ints(["sg_b", "sg_n", "sg_c", "sg_h", "sg_w", "sgx_b", "sgx_c", "sgx_h", "sgx_w", "C", "H", "W", "h", "w", "NV"]))
        out.append(dict(kernel="resample_pull_kernel", signature=sig, constexprs={"USE_INDEX": False, "ACC": tl.float32, "BLOCK": 1024}, num_warps=8))
    for pad, near, ex in modes:
        pull = ex and pad == 0
        sig = {"g_ptr": "*fp32", "x_ptr": "*fp32", "mats_ptr": "*fp32", "index_ptr": "*i64", "gx_ptr": "*fp32", "dot_ptr": "*fp32"}
        sig.update(rs_ints(["sg_b", "sg_c", "sg_h", "sg_w", "sx_b", "sx_c", "sx_h", "sx_w", "sgx_b", "sgx_c", "sgx_h", "sgx_w", "C", "H", "W", "N"]))
        block, warps = resample_config(1 << 20)
        cx = {"PADDING": pad, "NEAREST": near, "EXACT": ex, "NEED_GX": True, "GX_PULL": pull, "NEED_DOT": True, "ACC": tl.float32, "BLOCK": block}
        out.append(dict(kernel="transform_backward_kernel", signature=sig, constexprs=cx, num_warps=warps))
    for bn in (4, 8, 16):
        bd = max(1, min(64, 4096 // (bn * bn)))
        for select, gram in ((True, False), (False, True)):
            for cos in (True, False) if select else (True,):
                sig = {
                    "v_ptr": "*fp32",
                    "r_ptr": "*fp32",
                    "noise_ptr": "*fp32",
                    "scores_ptr": "*fp32",
                    "probs_ptr": "*fp32",
                    "index_ptr": "*i64",
                    "onehot_ptr": "*fp32",
                    "loss_ptr": "*fp32",
                }
                sig.update(rs_ints(["sv_b", "sv_n", "sv_d", "sr_d", "sn_b", "sn_n", "N", "D"]))
                sig.update({"beta": "fp32", "tau": "fp32", "eps": "fp32", "pair_scale": "fp32"})
                cx = {"COSINE": cos, "HAS_NOISE": False, "SELECT": select, "GRAM": gram, "NORMALIZED": True, "ACC": tl.float32, "BLOCK_N": bn, "BLOCK_D": bd}
                out.append(dict(kernel="scores_kernel", signature=sig, constexprs=cx, num_warps=4))
        sig = {
            "v_ptr": "*fp32",
            "r_ptr": "*fp32",
            "probs_ptr": "*fp32",
            "gs_ptr": "*fp32",
            "gp_ptr": "*fp32",
            "gh_ptr": "*fp32",
            "gv_ptr": "*fp32",
            "gr_ptr": "*fp32",
        }
        sig.update(rs_ints(["sv_b", "sv_n", "sv_d", "sr_d", "N", "D"]))
        sig.update({"logit_scale": "fp32", "eps": "fp32"})
        cx = {"COSINE": True, "HAS_GS": True, "HAS_GP": False, "HAS_GH": True, "ACC": tl.float32, "BLOCK_N": bn, "BLOCK_D": bd}
        out.append(dict(kernel="select_backward_kernel", signature=sig, constexprs=cx, num_warps=4))
        for norm in (True, False):
            sig = {"v_ptr": "*fp32", "gloss_ptr": "*fp32", "gv_ptr": "*fp32"}
            sig.update(rs_ints(["sv_b", "sv_n", "sv_d", "N", "D"]))
            sig.update({"eps": "fp32", "pair_scale": "fp32"})
            cx = {"NORMALIZED": norm, "ACC": tl.float32, "BLOCK_N": bn, "BLOCK_D": bd}
            out.append(dict(kernel="contrastive_backward_kernel", signature=sig, constexprs=cx, num_warps=4))
    return out


def _variant_name(v: dict) -> str:
    dts = "/".join(t[1:] for k, t in v["signature"].items() if k in ("x_ptr", "out_ptr", "g_ptr", "gx_ptr") and t.startswith("*"))
    cx = ",".join(f"{k}={getattr(val, 'name', val)}" for k, val in v["constexprs"].items() if k != "ACC")
    return f"{dts} {cx}".strip()


def _parse_usage(text: str) -> dict:
    m = {k: re.search(rf"{k}:(\d+)", text) for k in ("REG", "STACK", "SHARED", "LOCAL")}
    return {k: int(v.group(1)) if v else None for k, v in m.items()}


def _widths(sass: str, op: str) -> list[int]:
    found = set()
    for line in sass.splitlines():
        mm = re.search(rf"\b{op}(\.[A-Z0-9_.]+)?\s", line)
        if not mm:
            continue
        mods = (mm.group(1) or "").split(".")
        bits = 32
        for mod in mods:
            if mod in ("128", "64", "U8", "S8", "U16", "S16", "8", "16"):
                bits = {"U8": 8, "S8": 8, "8": 8, "U16": 16, "S16": 16, "16": 16}.get(mod, int(mod) if mod.isdigit() else 32)
        found.add(bits)
    return sorted(found)


def compile_one(args: tuple[dict, int]) -> dict:
    """Compile one variant for one arch (sm_XX) and measure it; never raises."""
    import triton
    from triton.backends.compiler import GPUTarget

    from . import resample, scores

    v, arch = args
    fn = getattr(resample, v["kernel"], None) or getattr(scores, v["kernel"])
    row = dict(
        name=v["kernel"],
        variant=_variant_name(v),
        arch=arch,
        registers=None,
        spill_stores=None,
        spill_loads=None,
        local=None,
        stack=None,
        shared=None,
        global_load_bits=None,
        global_store_bits=None,
        global_atomic_bits=None,
        error=None,
    )
    try:
        sig = dict(v["signature"])
        for k in v["constexprs"]:
            sig[k] = "constexpr"
        src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=v["constexprs"])
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": v["num_warps"]})
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "k.cubin")
            with open(path, "wb") as f:
                f.write(k.asm["cubin"])
            usage = subprocess.run([_bin("cuobjdump"), "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
            sass = subprocess.run([_bin("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
        u = _parse_usage(usage)
        row.update(registers=u["REG"], stack=u["STACK"], shared=u["SHARED"], local=u["LOCAL"])
        # Local-memory traffic in the SASS: register spills (and any stack-resident arrays).
        row["spill_stores"] = len(re.findall(r"\bSTL(\.[A-Z0-9]+)*\s", sass))
        row["spill_loads"] = len(re.findall(r"\bLDL(\.[A-Z0-9]+)*\s", sass))
        row["global_load_bits"] = _widths(sass, "LDG")
        row["global_store_bits"] = _widths(sass, "STG")
        row["global_atomic_bits"] = sorted({b for op in ("RED", "REDG", "ATOM", "ATOMG") for b in _widths(sass, op)})
    except Exception as e:  # reported, not raised: the gate decides
        row["error"] = f"{type(e).__name__}: {e}"[:2000]
    return row


def compile_report(archs: tuple[int, ...] = (80, 90), jobs: int | None = None) -> list[dict]:
    """Compile every variant of :func:`variants` for each arch in ``archs``; one row per kernel×variant×arch.

    ``jobs`` worker processes (default: CPU count, at most 8). Needs ``TRITON_INTERPRET``
    unset in this process (raises RuntimeError otherwise).
    """
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("kernels.compile.compile_report: unset TRITON_INTERPRET (the interpreter replaces the kernels)")
    work = [(v, a) for v in variants() for a in archs]
    jobs = jobs or min(8, os.cpu_count() or 1)
    if jobs <= 1:
        return [compile_one(w) for w in work]
    with ProcessPoolExecutor(jobs) as ex:
        return list(ex.map(compile_one, work))


if __name__ == "__main__":
    print(json.dumps(compile_report(), indent=1))
