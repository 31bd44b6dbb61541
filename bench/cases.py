"""Benchmark cases × providers × sizes, the timers, and one result row per measurement.

Cases (one name stem per op, as in ``canon``): ``orbit``, ``select`` (scores, choice and
both losses), ``canonicalize``, ``invert``, ``step`` (canonicalizer training step,
forward + backward + SGD update, with :class:`canon.networks.ConvEncoder`) and
``step-no-encoder`` (the same step with a cheap fixed-cost map instead of the encoder,
so the canonicalization overhead shows).

Providers get the same inputs and parameters:

* ``ours-triton``: canon with the Triton backend (CUDA only);
* ``ours-reference``: canon with the plain-PyTorch reference backend (any device);
* ``equiadapt``: equiadapt 0.1.2 itself, where it imports;
* ``equiadapt-loop``: :class:`bench.baselines.EquiadaptLoop`, its operations in torch.

Parameters shared by every provider: colour inputs are scored on a centre crop of ratio
0.8 (``ceil(0.8·H)`` pixels, equiadapt's example config) resized to 96×96 with edge
padding; grayscale inputs (1×28×28) are scored at full size with zero padding, as
equiadapt does. Canonical images and inverses are at full input resolution.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import canon
from bench.baselines import EquiadaptLoop, equiadapt_status, load_equiadapt
from canon.networks import ConvEncoder

CASES = ("orbit", "select", "canonicalize", "invert", "step", "step-no-encoder")
PROVIDERS = ("ours-triton", "ours-reference", "equiadapt", "equiadapt-loop")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SHAPES = {"1x28x28": ((1, 28, 28), None), "3x32x32": ((3, 32, 32), 96), "3x224x224": ((3, 224, 224), 96)}
CROP_RATIO = 0.8  # equiadapt's example config (input_crop_ratio)
DIM = 128  # vector size D (equiadapt's example out_vector_size)
PRIOR_WEIGHT, CONTRAST_WEIGHT = 100.0, 1e-4  # equiadapt example: prior_weight, and the group_contrast_weight its config comment suggests

COLUMNS = [
    "case",
    "provider",
    "status",
    "device",
    "dtype",
    "batch",
    "group",
    "in_shape",
    "out_shape",
    "median_ms",
    "iqr_ms",
    "q25_ms",
    "q75_ms",
    "reps",
    "timer",
    "cpu_ms",
    "load_avg",
    "cuda_graph",
    "bytes",
    "gbps",
    "copy_gbps",
    "pct_copy",
    "peak_mem_mb",
    "mem_method",
    "launches",
    "launch_kind",
    "images_per_s",
    "speedup_vs_equiadapt_loop",
    "speedup_vs_equiadapt",
    "note",
    "machine",
    "device_name",
    "threads",
    "torch",
    "triton",
    "canon",
    "git_commit",
    "date",
    "command",
]


class Unavailable(Exception):
    """This provider cannot run this case here (the reason goes into the row's note)."""


@dataclass(frozen=True)
class Config:
    """One size point of one case."""

    case: str
    batch: int
    n: int
    shape: str  # key of SHAPES
    dtype: str = "fp32"

    @property
    def group(self) -> str:
        return f"C{self.n}"

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return SHAPES[self.shape][0]

    @property
    def view(self) -> int:
        """Side of the views the encoder scores."""
        size = SHAPES[self.shape][1]
        return size if size is not None else self.in_shape[1]

    @property
    def label(self) -> str:
        v = self.view
        tail = "" if v == self.in_shape[1] else f"→{v}"
        return f"{self.group} B={self.batch} {self.shape}{tail} {self.dtype}"


@dataclass
class Bench:
    """A ready-to-time closure and what it moves."""

    fn: Callable[[], object]
    bytes: int | None  # inputs read once + outputs written once (None: not a bandwidth case)
    out_shape: str
    note: str = ""


# -- the configurations ------------------------------------------------------------------


# providers timed also with CUDA graphs (the launch-bound ones, and ours-triton beside them);
# the reference backend reads view matrices on the host (a sync), which graphs cannot capture
GRAPH_PROVIDERS = ("ours-triton", "equiadapt", "equiadapt-loop")

TARGETS = (
    Config("orbit", 64, 8, "3x32x32"),
    Config("step", 64, 8, "3x32x32"),
)


def quick_configs(device: str) -> list[Config]:
    """A small set with the target cases first; larger on a GPU."""
    cfgs = list(TARGETS)
    cfgs += [
        Config("step-no-encoder", 64, 8, "3x32x32"),
        Config("select", 64, 8, "3x32x32"),
        Config("canonicalize", 64, 8, "3x32x32"),
        Config("invert", 64, 8, "3x32x32"),
        Config("orbit", 64, 4, "1x28x28"),
        Config("orbit", 64, 8, "3x32x32", "bf16"),
        Config("orbit", 16, 8, "3x224x224"),
        Config("step", 64, 4, "1x28x28"),
    ]
    if device == "cuda":
        cfgs += [Config("orbit", 512, 16, "3x224x224"), Config("step", 256, 8, "3x32x32", "bf16"), Config("step-no-encoder", 512, 16, "3x32x32")]
        cfgs += [Config(c, 256, 8, "3x224x224") for c in ("canonicalize", "invert")]
    return cfgs


def full_configs() -> list[Config]:
    """The full sweep (meant for a GPU): every case × B ∈ {16, 64, 256, 512} × N ∈ {4, 8, 16} × shape × dtype."""
    return [Config(c, b, n, s, d) for c, s, n, b, d in itertools.product(CASES, SHAPES, (4, 8, 16), (16, 64, 256, 512), DTYPES)]


# -- inputs and the closures per provider ---------------------------------------------------


class PoolLinear(nn.Module):
    """The cheap fixed-cost map of ``step-no-encoder``: global mean pool and a linear layer."""

    def __init__(self, in_channels: int, out_dim: int):
        super().__init__()
        self.head = nn.Linear(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(-2, -1)))


def make_encoder(cfg: Config) -> nn.Module:
    """The same encoder for every provider (fresh seeded weights per call)."""
    torch.manual_seed(0)
    C = cfg.in_shape[0]
    if cfg.case == "step-no-encoder":
        return PoolLinear(C, DIM)
    return ConvEncoder(C, out_dim=DIM, hidden=16, num_layers=3, kernel_size=5)


def _canon_view_params(cfg: Config) -> dict:
    """canon's single-resampling equivalent of equiadapt's scoring view."""
    C, H, W = cfg.in_shape
    if C == 1:
        return dict(size=None, crop_ratio=1.0, padding="zeros")
    m = min(math.ceil(H * CROP_RATIO), math.ceil(W * CROP_RATIO))
    return dict(size=cfg.view, crop_ratio=(m / H, m / W), padding="border")


def _inputs(cfg: Config, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    dt = DTYPES[cfg.dtype]
    B, N = cfg.batch, cfg.n
    x = torch.rand(B, *cfg.in_shape, generator=g)
    index = torch.randint(0, N, (B,), generator=g)
    vectors = torch.randn(B, N, DIM, generator=g)
    reference = torch.randn(DIM, generator=g)
    return dict(
        x=x.to(device, dt),
        index=index.to(device),
        angles=(index.float() * (360.0 / N)).to(device),
        vectors=vectors.to(device, dt),
        vectors_gm=vectors.transpose(0, 1).reshape(N * B, DIM).contiguous().to(device, dt),  # equiadapt's layout
        reference=reference.to(device),
    )


def _esize(dt: torch.dtype) -> int:
    return torch.tensor([], dtype=dt).element_size()


def _shape(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, torch.Tensor) else ""


def _loop_module(cfg: Config, encoder: nn.Module, device: str) -> EquiadaptLoop:
    return EquiadaptLoop(encoder, DIM, cfg.in_shape, cfg.n, "rotation", CROP_RATIO, cfg.view).to(device)


def _equiadapt_module(cfg: Config, encoder: nn.Module, device: str):
    cls, OmegaConf = load_equiadapt()
    encoder.out_vector_size = DIM
    hp = OmegaConf.create(
        dict(beta=1.0, input_crop_ratio=CROP_RATIO, resize_shape=cfg.view, group_type="rotation", num_rotations=cfg.n, artifact_err_wt=0, learn_ref_vec=False)
    )
    model = cls(encoder, hp, cfg.in_shape).to(device)
    model.device = torch.device(device)
    return model


def _ged(inp: dict) -> dict:
    # equiadapt rotates by −angle; for the same element as canon's index k (counter-clockwise
    # 360·k/N) it gets angle −360·k/N: same work, the sign does not change the cost.
    return {"rotation": -inp["angles"]}


def build(cfg: Config, provider: str, device: str) -> Bench:
    """The closure timing ``cfg.case`` for ``provider`` on ``device``; raises :class:`Unavailable`."""
    if provider == "ours-triton":
        if device != "cuda":
            raise Unavailable("no CUDA device here (the Triton interpreter is a test tool, not a performance path)")
        try:
            from canon import triton_ops  # noqa: F401
        except Exception as e:
            raise Unavailable(f"canon's Triton ops do not import: {type(e).__name__}: {e}") from e
    if provider == "equiadapt":
        ok, why = equiadapt_status()
        if not ok:
            raise Unavailable(why)
    inp = _inputs(cfg, device)
    dt = DTYPES[cfg.dtype]
    es = _esize(dt)
    B, N, C, v = cfg.batch, cfg.n, cfg.in_shape[0], cfg.view
    backend = "triton" if provider == "ours-triton" else "reference"
    ours = provider.startswith("ours")
    x = inp["x"]
    vp = _canon_view_params(cfg)

    def with_backend(fn):
        def run():
            with canon.use_backend(backend):
                return fn()

        return run

    if cfg.case == "orbit":
        nbytes = x.numel() * es + B * N * C * v * v * es
        if ours:
            fn = with_backend(lambda: canon.orbit(x, cfg.group, vp["size"], vp["crop_ratio"], vp["padding"]))
        elif provider == "equiadapt-loop":
            loop = _loop_module(cfg, nn.Identity(), device)
            fn = lambda: loop.group_augment(loop.scoring_view(x))  # noqa: E731
        else:
            model = _equiadapt_module(cfg, nn.Identity(), device)
            fn = lambda: model.group_augment(model.resize_canonization(model.crop_canonization(x)))  # noqa: E731
        with torch.no_grad():
            out = fn()
        return Bench(_no_grad(fn), nbytes, _shape(out))

    if cfg.case == "select":
        # read: vectors + reference; write: scores, probs, one-hot (fp32) + index (int64) + 2 losses
        nbytes = B * N * DIM * es + DIM * 4 + 3 * B * N * 4 + B * 8 + 8
        vec, ref, vgm = inp["vectors"], inp["reference"], inp["vectors_gm"]
        if ours:

            def fn():
                sel = canon.select(vec, ref, beta=1.0, straight_through=True)
                return sel, canon.losses.contrastive_loss(vec, "raw"), canon.losses.prior_loss(sel.scores)

            fn = with_backend(fn)
        else:
            if provider == "equiadapt-loop":
                loop = _loop_module(cfg, nn.Identity(), device).train()
            else:
                loop = _equiadapt_module(cfg, nn.Identity(), device).train()
            loop.reference_vector.data.copy_(ref[None])

            def fn():
                GB = vgm.shape[0]
                scalar_out = F.cosine_similarity(loop.reference_vector.to(vgm.dtype).repeat(GB, 1), vgm)
                acts = scalar_out.reshape(N, -1).T
                if provider == "equiadapt-loop":
                    loop.info = {"vector_out": vgm}
                    ged = loop.group_element(acts)
                else:
                    loop.canonicalization_info_dict = {"vector_out": vgm}
                    ged = loop.groupactivations_to_groupelement(acts)
                    loop.canonicalization_info_dict.update(group_element=ged, group_activations=acts)
                return ged, loop.get_optimization_specific_loss(), loop.get_prior_regularization_loss()

        return Bench(_no_grad(fn), nbytes, f"{B}x{N}")

    if cfg.case in ("canonicalize", "invert"):
        nbytes = 2 * x.numel() * es + B * 8
        ged = _ged(inp)
        if cfg.case == "canonicalize":
            if ours:
                fn = with_backend(lambda: canon.canonicalize(x, inp["index"], cfg.group, vp["padding"]))
            elif provider == "equiadapt-loop":
                loop = _loop_module(cfg, nn.Identity(), device)
                fn = lambda: loop.apply_group_element(x, ged)  # noqa: E731
            else:
                model = _equiadapt_module(cfg, nn.Identity(), device)
                model.get_groupelement = lambda _x: ged  # their canonicalize, our fixed choice
                fn = lambda: model.canonicalize(x)  # noqa: E731
        else:
            if ours:
                fn = with_backend(lambda: canon.invert(x, inp["index"], cfg.group, "scalar", "zeros"))
            elif provider == "equiadapt-loop":
                loop = _loop_module(cfg, nn.Identity(), device)
                fn = lambda: loop.invert_scalar(x, ged)  # noqa: E731
            else:
                model = _equiadapt_module(cfg, nn.Identity(), device)
                model.canonicalization_info_dict = {"group_element": ged}
                fn = lambda: model.invert_canonicalization(x, induced_rep_type="scalar")  # noqa: E731
        return Bench(_no_grad(fn), nbytes, _shape(x))

    if cfg.case in ("step", "step-no-encoder"):
        return _build_step(cfg, provider, device, inp, backend)
    raise ValueError(f"unknown case {cfg.case!r}")


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _build_step(cfg: Config, provider: str, device: str, inp: dict, backend: str) -> Bench:
    """forward (orbit → encoder → scores → canonical image) + losses + backward + SGD step.

    fp32 runs in fp32; bf16 runs the whole step under ``torch.autocast(bf16)`` with fp32
    inputs and parameters (the usual mixed-precision set-up), for every provider alike.
    """
    x = inp["x"].float()
    encoder = make_encoder(cfg).to(device)  # identical initial weights for every provider
    autocast = cfg.dtype == "bf16"
    vp = _canon_view_params(cfg)
    if provider.startswith("ours"):
        model = canon.OrbitCanonicalizer(encoder, cfg.group, vp["size"], vp["crop_ratio"], padding=vp["padding"], contrastive="raw", dim=DIM).to(device).train()

        def forward_losses():
            with canon.use_backend(backend):
                xc = model(x)
                return xc, model.prior_loss(), model.contrastive_loss()

    elif provider == "equiadapt-loop":
        model = _loop_module(cfg, encoder, device).train()

        def forward_losses():
            xc = model.canonicalize(x)
            return xc, model.get_prior_regularization_loss(), model.get_optimization_specific_loss()

    else:
        model = _equiadapt_module(cfg, encoder, device).train()

        def forward_losses():
            xc = model(x)
            return xc, model.get_prior_regularization_loss(), model.get_optimization_specific_loss()

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            xc, prior, contrast = forward_losses()
            task = xc.float().square().mean()  # a stand-in task loss: its gradient reaches the choice through the canonical image
            loss = task + PRIOR_WEIGHT * prior + CONTRAST_WEIGHT * contrast
        loss.backward()
        opt.step()
        return loss

    note = "autocast bf16" if autocast else ""
    return Bench(step, None, f"{cfg.batch}x{cfg.n}x{DIM}", note)


# -- timers ---------------------------------------------------------------------------------


def _quantiles(ts_ms: list[float]) -> tuple[float, float, float]:
    if len(ts_ms) == 1:
        return ts_ms[0], ts_ms[0], ts_ms[0]
    q = statistics.quantiles(ts_ms, n=4, method="inclusive")
    return q[0], statistics.median(ts_ms), q[2]


def time_cpu(fn, min_time_s: float = 1.0, min_reps: int = 5, max_reps: int = 100, warmup: int = 1) -> dict:
    """Wall-clock per call (perf_counter), after ``warmup`` calls, until both limits are met.

    Also the median process CPU time per call (all threads, ``cpu_ms``): on a machine that
    other processes load, wall time grows with preemption while CPU time mostly does not.
    """
    for _ in range(warmup):
        fn()
    ts, cpu = [], []
    t_start = time.perf_counter()
    while len(ts) < max_reps and (len(ts) < min_reps or time.perf_counter() - t_start < min_time_s):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    q25, med, q75 = _quantiles(ts)
    return dict(median_ms=med, q25_ms=q25, q75_ms=q75, reps=len(ts), timer="perf_counter", cpu_ms=statistics.median(cpu))


def time_cuda(fn, cuda_graph: bool = False, quick: bool = True) -> dict:
    """triton.testing.do_bench (CUDA events around each call, L2 flushed), or its CUDA-graph variant."""
    import triton.testing as tt

    rep = 100 if quick else 500
    if cuda_graph:  # captures rep/estimate unrolled calls on a side stream, replays them
        q = tt.do_bench_cudagraph(fn, rep=rep, quantiles=[0.25, 0.5, 0.75])
        timer = "do_bench_cudagraph"
    else:
        q = tt.do_bench(fn, warmup=25, rep=rep, quantiles=[0.25, 0.5, 0.75])
        timer = "do_bench"
    return dict(median_ms=q[1], q25_ms=q[0], q75_ms=q[2], reps="", timer=timer)


def copy_bandwidth(device: str, quick: bool = True) -> float:
    """GB/s of ``dst.copy_(src)`` (bytes read + bytes written), the roofline of this run."""
    n = (64 if device == "cpu" else 512) * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)  # noqa: E731
    t = time_cuda(fn, quick=quick) if device == "cuda" else time_cpu(fn, min_time_s=0.5, min_reps=10)
    return 2 * n * 4 / (t["median_ms"] * 1e-3) / 1e9


def profile_call(fn, device: str) -> dict:
    """Peak memory and launches of one call (after the timing, so everything is warm)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with profile(activities=acts, profile_memory=device == "cpu") as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        launches = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        return dict(peak_mem_mb=peak, mem_method="cuda.max_memory_allocated", launches=launches, launch_kind="cuda-kernels")
    return dict(peak_mem_mb=cpu_peak_mb(events), mem_method="profiler-alloc-timeline", launches=count_leaf_ops(events), launch_kind="cpu-leaf-aten-ops")


def cpu_peak_mb(events) -> float:
    """Peak of live CPU tensor memory in a profile: op-level allocations and frees in time order."""
    timeline = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in events if e.self_cpu_memory_usage)
    peak = cur = 0
    for _, d in timeline:
        cur += d
        peak = max(peak, cur)
    return peak / 2**20


def count_leaf_ops(events) -> int:
    """aten ops that call no other aten op: on CPU, the closest thing to a kernel launch."""
    return sum(1 for e in events if e.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in e.cpu_children))


# -- environment -----------------------------------------------------------------------------


def environment(device: str, command: str) -> dict:
    """Machine, versions, commit and date, recorded in every row."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "unavailable"
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        device_name = _cpu_name()
    return dict(
        machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        device_name=device_name,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        triton=triton_version,
        canon=canon.__version__,
        git_commit=git_commit(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command,
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


# -- one row -------------------------------------------------------------------------------


def _base_row(cfg: Config, provider: str, device: str, env: dict, copy_gbps: float, cuda_graph: bool) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(env)
    row.update(
        case=cfg.case,
        provider=provider,
        device=device,
        dtype=cfg.dtype,
        batch=cfg.batch,
        group=cfg.group,
        in_shape="x".join(map(str, cfg.in_shape)),
        cuda_graph=cuda_graph,
        copy_gbps=round(copy_gbps, 2),
        load_avg=round(os.getloadavg()[0], 2),  # 1-minute load average when the row started
    )
    return row


def _failed(row: dict, e: Exception) -> dict:
    if isinstance(e, Unavailable):
        row.update(status="unavailable", note=str(e))
    else:  # a failing provider is a published result, not a crash of the suite
        row.update(status="error", note=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
    return row


def _finish(row: dict, cfg: Config, b: Bench, t: dict, device: str, copy_gbps: float, cuda_graph: bool) -> dict:
    """Fill the timing-derived columns, then profile one more call for memory and launches."""
    row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()})
    row["iqr_ms"] = round(t["q75_ms"] - t["q25_ms"], 4)
    row["images_per_s"] = round(cfg.batch / (t["median_ms"] * 1e-3), 1)
    if b.bytes:
        gbps = b.bytes / (t["median_ms"] * 1e-3) / 1e9
        row.update(gbps=round(gbps, 3), pct_copy=round(100 * gbps / copy_gbps, 2))
    if not cuda_graph:
        p = profile_call(b.fn, device)
        row.update(peak_mem_mb=round(p["peak_mem_mb"], 2), mem_method=p["mem_method"], launches=p["launches"], launch_kind=p["launch_kind"])
    row["status"] = "ok"
    return row


def measure(
    cfg: Config, provider: str, device: str, env: dict, copy_gbps: float, quick: bool = True, cuda_graph: bool = False, min_time_s: float = 1.0
) -> dict:
    """Build, time and profile one (case, provider, size); always returns a row (status ok/unavailable/error)."""
    row = _base_row(cfg, provider, device, env, copy_gbps, cuda_graph)
    try:
        b = build(cfg, provider, device)
        row.update(out_shape=b.out_shape, note=b.note, bytes=b.bytes or "")
        if device == "cuda":
            t = time_cuda(b.fn, cuda_graph=cuda_graph, quick=quick)
        else:
            t = time_cpu(b.fn, min_time_s=min_time_s, min_reps=3 if cfg.case.startswith("step") else 5)
        return _finish(row, cfg, b, t, device, copy_gbps, cuda_graph)
    except Exception as e:
        return _failed(row, e)


def measure_interleaved(cfg: Config, providers: list[str], env: dict, copy_gbps: float, min_time_s: float = 1.0, max_reps: int = 100) -> list[dict]:
    """CPU: time every provider of one size point in alternating rounds (A B A B ...).

    On a shared machine the speed drifts with the load of other processes; alternating
    the calls gives every provider the same conditions, so their ratio stays fair. Each
    provider gets one warm-up call, then rounds run until every provider has ``min_reps``
    calls (3 for steps, 5 otherwise) and its calls took ``min_time_s`` in total.
    """
    device = "cpu"
    rows, benches = {}, {}
    for p in providers:
        rows[p] = _base_row(cfg, p, device, env, copy_gbps, False)
        try:
            b = build(cfg, p, device)
            rows[p].update(out_shape=b.out_shape, note=b.note, bytes=b.bytes or "")
            b.fn()  # warm-up
            benches[p] = b
        except Exception as e:
            _failed(rows[p], e)
    min_reps = 3 if cfg.case.startswith("step") else 5
    wall = {p: [] for p in benches}
    cpu = {p: [] for p in benches}
    while benches and any(len(wall[p]) < max_reps and (len(wall[p]) < min_reps or sum(wall[p]) < min_time_s * 1e3) for p in benches):
        for p, b in list(benches.items()):
            try:
                c0, t0 = time.process_time(), time.perf_counter()
                b.fn()
                wall[p].append((time.perf_counter() - t0) * 1e3)
                cpu[p].append((time.process_time() - c0) * 1e3)
            except Exception as e:
                _failed(rows[p], e)
                del benches[p]
    for p, b in benches.items():
        q25, med, q75 = _quantiles(wall[p])
        t = dict(median_ms=med, q25_ms=q25, q75_ms=q75, reps=len(wall[p]), timer="perf_counter-interleaved", cpu_ms=statistics.median(cpu[p]))
        try:
            _finish(rows[p], cfg, b, t, device, copy_gbps, False)
        except Exception as e:
            _failed(rows[p], e)
    return [rows[p] for p in providers]
