"""The benchmark suite runs and writes a valid CSV; every case and mode builds and differentiates what it
claims; the equiadapt-loop baseline computes canon's orbit."""

import csv

import pytest
import torch
from conftest import assert_close, kernel_device

from bench import __main__ as bench_cli
from bench.baselines import EquiadaptLoop, rotate
from bench.cases import CASES, quick_configs, with_modes
from bench.registry import MODES, PROVIDERS, REGISTRY, Bench, Config, Unavailable, build, graphable
from bench.rows import COLUMNS
from canon.networks import ConvEncoder

# kornia-style rotation: its tolerance is the "kornia_rotation" case of the table in tests/conftest.py
OPS = ("orbit", "select", "canonicalize", "invert")
OP_CASES = (*OPS, "orbit-one-tap")  # every case timing one op (the last: orbit without antialiasing)
STEPS = ("step", "step-no-encoder")


@pytest.fixture(autouse=True)
def _cheap_compile(monkeypatch):
    """torch-compile rows through dynamo + AOT autograd without inductor's C++ build (seconds per row on CI;
    inductor runs in the GPU bench, and tests/test_bench_peers.py checks the compiled peer's values)."""
    monkeypatch.setenv("BENCH_COMPILE_BACKEND", "aot_eager")


def _run_cli(tmp_path, *argv: str) -> list[dict]:
    out = str(tmp_path)
    rc = bench_cli.main(["--quick", "--device", "cpu", "--batch", "2", "--min-time", "0", "--output-dir", out, *argv])
    assert rc == 0
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0].keys()) == COLUMNS
    for r in rows:
        assert r["status"] in ("ok", "unavailable", "error") and r["mode"] in MODES, r
        assert r["git_commit"] and r["torch"] and r["date"] and r["machine"], r
        if r["status"] != "ok":
            assert r["note"], r  # every missing result says why
    return rows


def test_cli_writes_valid_csv(tmp_path):
    rows = _run_cli(tmp_path, "--cases", "orbit")
    assert {r["provider"] for r in rows} == set(PROVIDERS)
    assert {r["case"] for r in rows} == {"orbit"} and {r["mode"] for r in rows} == {"forward", "backward"}
    ok = [r for r in rows if r["status"] == "ok"]
    assert {"ours-reference", "equiadapt-loop"} <= {r["provider"] for r in ok}
    for r in ok:  # (gbps is rounded to 3 decimals: tiny rows on a busy machine can show 0.0)
        assert float(r["median_ms"]) > 0 and float(r["iqr_ms"]) >= 0 and float(r["gbps"]) >= 0, r
        assert int(r["bytes"]) > 0 and int(r["launches"]) > 0, r
    point = dict(provider="ours-reference", group="C8", in_shape="3x32x32", dtype="fp32")
    target = [r for r in ok if all(r[k] == v for k, v in point.items())]
    assert {r["mode"] for r in target} == {"forward", "backward"}
    for r in target:  # the speedup compares rows of the same mode only
        assert r["out_shape"] == "2x8x3x96x96" and float(r["speedup_vs_equiadapt_loop"]) > 0, r

    from bench import plots

    assert plots.plot_all(str(tmp_path / "results.csv"), str(tmp_path))


def test_cli_backward_rows_for_every_op(tmp_path):
    """``--modes backward``: a backward row of every op for the reference backend and the loop baseline."""
    rows = _run_cli(tmp_path, "--cases", ",".join(OPS), "--modes", "backward", "--no-plots")
    assert {r["mode"] for r in rows} == {"backward"}
    assert {r["provider"] for r in rows} == set(PROVIDERS)
    ok = {(r["case"], r["provider"]) for r in rows if r["status"] == "ok"}
    assert {(c, p) for c in OPS for p in ("ours-reference", "equiadapt-loop")} <= ok
    for r in rows:
        if r["status"] == "ok":
            assert float(r["median_ms"]) > 0 and int(r["bytes"]) > 0 and int(r["launches"]) > 0, r


def test_registry_lists_every_case():
    assert CASES == tuple(REGISTRY) == (
        "orbit", "orbit-one-tap", "select", "canonicalize", "invert", "step", "step-no-encoder"
    )  # fmt: skip
    for name, case in REGISTRY.items():
        assert case.name == name and case.summary, name
        assert case.default_mode == ("full" if name in STEPS else "forward"), name
        assert Config(name, 2, 4, "1x28x28").mode == case.default_mode
    quick = quick_configs("cpu")
    assert {c.case for c in quick} == set(CASES)
    assert {c.case for c in quick if c.mode == "backward"} == set(OPS)
    assert [c.mode for c in with_modes(quick[:1], ["backward", "full", "backward"])] == ["backward", "full"]
    # CUDA graphs capture forwards without autograd only
    assert graphable(Config("orbit", 2, 4, "1x28x28"))
    assert not graphable(Config("orbit", 2, 4, "1x28x28", mode="backward"))
    assert not graphable(Config("step", 2, 4, "1x28x28", mode="forward"))


def _check_grads(grads, what: str) -> None:
    assert grads, what
    for i, g in enumerate(grads):
        assert g is not None and bool(torch.isfinite(g).all()), f"{what}: gradient {i}"
        assert bool(g.abs().sum() > 0), f"{what}: gradient {i} is zero"


def _check_mode(cfg: Config, b: Bench, provider: str) -> None:
    what = f"{cfg.case} {cfg.mode} {provider}"
    out = b.fn()
    assert b.out_shape, what
    if cfg.case in OP_CASES:
        assert b.bytes and b.bytes > 0, what
    if cfg.mode == "backward" or (cfg.mode == "full" and cfg.case in OP_CASES):
        _check_grads(out, what)  # every input the mode differentiates receives a gradient
        again = b.fn()  # the retained graph is differentiated again: the same gradients (up to atomics' order)
        for g, h in zip(out, again):
            assert_close(h, g, msg=what)
    elif cfg.mode == "full":  # a step: the loss after one SGD update
        assert out.dim() == 0 and bool(torch.isfinite(out)), what


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "case,provider",
    [
        (c, p)
        for c in CASES
        for p in ("ours-reference", "equiadapt-loop")
        if (c, p) != ("orbit-one-tap", "equiadapt-loop")
    ],
)
def test_every_case_runs_every_mode(case, mode, provider):
    """Backward rows time a backward that reaches every input: x and the one-hot for canonicalize/invert,
    the vectors and the reference for select, x for orbit, every parameter for steps."""
    cfg = Config(case, 2, 4, "3x32x32", mode=mode)
    _check_mode(cfg, build(cfg, provider, "cpu"), provider)


def test_one_tap_views_have_no_equiadapt_twin():
    with pytest.raises(Unavailable, match="always antialiases"):  # said in the row, not timed
        build(Config("orbit-one-tap", 2, 4, "3x32x32"), "equiadapt-loop", "cpu")


@kernel_device
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", OPS)
def test_triton_closures_run_every_mode(case, mode, dev):
    """ours-triton's closures (Triton forward and backward kernels): on CPU tensors under the Triton
    interpreter (no performance path, so the availability check is skipped), compiled on CUDA."""
    cfg = Config(case, 2, 4, "1x28x28", mode=mode)
    _check_mode(cfg, build(cfg, "ours-triton", dev, check_provider=False), "ours-triton")


def test_ours_triton_is_unavailable_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(Unavailable, match="no CUDA device"):
        build(Config("orbit", 2, 4, "1x28x28", mode="backward"), "ours-triton", "cpu")


def test_rotate_matches_kornia_convention():
    x = torch.rand(2, 3, 7, 7)
    # positive angle: counter-clockwise as displayed, like torch.rot90(x, 1, dims=(-2, -1))
    assert_close(rotate(x, torch.tensor(90.0)), torch.rot90(x, 1, dims=(-2, -1)), case="kornia_rotation")
    expected = torch.stack([torch.rot90(x[0], 2, (-2, -1)), torch.rot90(x[1], -1, (-2, -1))])
    assert_close(rotate(x, torch.tensor([180.0, -90.0])), expected, case="kornia_rotation")


@pytest.mark.parametrize("in_shape, n", [((1, 9, 9), 4), ((3, 16, 16), 4), ((1, 8, 8), 2)])
def test_loop_orbit_equals_canon_orbit(in_shape, n):
    """Exact case (quarter turns, no crop/resize): the same views, up to layout and element order.

    equiadapt's layout is group-major (row g·B + b) and its element e turns clockwise by
    360·e/N, which is canon's element (−e) mod N (counter-clockwise).
    """
    import canon

    B = 3
    x = torch.rand(B, *in_shape, generator=torch.Generator().manual_seed(0))
    encoder = ConvEncoder(in_shape[0], out_dim=8)
    loop = EquiadaptLoop(encoder, 8, in_shape, n, input_crop_ratio=1.0, resize_shape=in_shape[-1])
    theirs = loop.group_augment(loop.scoring_view(x)).reshape(n, B, *in_shape).transpose(0, 1)
    ours = canon.orbit(x, f"C{n}", padding="zeros" if in_shape[0] == 1 else "border")
    assert_close(theirs, ours[:, [(-e) % n for e in range(n)]], case="kornia_rotation")
