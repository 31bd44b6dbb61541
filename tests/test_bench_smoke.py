"""The benchmark suite runs and writes a valid CSV; the equiadapt-loop baseline computes canon's orbit."""

import csv

import pytest
import torch
from conftest import assert_close

from bench import __main__ as bench_cli
from bench import cases as C
from bench.baselines import EquiadaptLoop, rotate
from canon.networks import ConvEncoder

# kornia-style rotation builds cos/sin of the angle in float32: quarter turns are exact up to ~1e-7 per tap


def test_cli_writes_valid_csv(tmp_path):
    rc = bench_cli.main(["--quick", "--device", "cpu", "--cases", "orbit", "--batch", "2", "--min-time", "0", "--no-plots", "--output-dir", str(tmp_path)])
    assert rc == 0
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0].keys()) == C.COLUMNS
    assert {r["provider"] for r in rows} == set(C.PROVIDERS)
    for r in rows:
        assert r["case"] == "orbit" and r["status"] in ("ok", "unavailable", "error"), r
        assert r["git_commit"] and r["torch"] and r["date"] and r["machine"], r
        if r["status"] != "ok":
            assert r["note"], r  # every missing result says why
    ok = [r for r in rows if r["status"] == "ok"]
    assert {"ours-reference", "equiadapt-loop"} <= {r["provider"] for r in ok}
    for r in ok:
        assert float(r["median_ms"]) > 0 and float(r["iqr_ms"]) >= 0 and float(r["gbps"]) > 0 and int(r["launches"]) > 0
    target = [r for r in ok if r["provider"] == "ours-reference" and r["group"] == "C8" and r["in_shape"] == "3x32x32" and r["dtype"] == "fp32"]
    assert target and target[0]["out_shape"] == "2x8x3x96x96" and float(target[0]["speedup_vs_equiadapt_loop"]) > 0

    from bench import plots

    assert plots.plot_all(str(tmp_path / "results.csv"), str(tmp_path))


def test_rotate_matches_kornia_convention():
    x = torch.rand(2, 3, 7, 7)
    # positive angle: counter-clockwise as displayed, like torch.rot90(x, 1, dims=(-2, -1))
    assert_close(rotate(x, torch.tensor(90.0)), torch.rot90(x, 1, dims=(-2, -1)), case="kornia_rotation")
    assert_close(
        rotate(x, torch.tensor([180.0, -90.0])), torch.stack([torch.rot90(x[0], 2, (-2, -1)), torch.rot90(x[1], -1, (-2, -1))]), case="kornia_rotation"
    )


@pytest.mark.parametrize("in_shape, n", [((1, 9, 9), 4), ((3, 16, 16), 4), ((1, 8, 8), 2)])
def test_loop_orbit_equals_canon_orbit(in_shape, n):
    """Exact case (quarter turns, no crop/resize): the same views, up to layout and element order.

    equiadapt's layout is group-major (row g·B + b) and its element e turns clockwise by
    360·e/N, which is canon's element (−e) mod N (counter-clockwise).
    """
    import canon

    B = 3
    x = torch.rand(B, *in_shape, generator=torch.Generator().manual_seed(0))
    loop = EquiadaptLoop(ConvEncoder(in_shape[0], out_dim=8), 8, in_shape, n, input_crop_ratio=1.0, resize_shape=in_shape[-1])
    theirs = loop.group_augment(loop.scoring_view(x)).reshape(n, B, *in_shape).transpose(0, 1)
    ours = canon.orbit(x, f"C{n}", padding="zeros" if in_shape[0] == 1 else "border")
    assert_close(theirs, ours[:, [(-e) % n for e in range(n)]], case="kornia_rotation")
