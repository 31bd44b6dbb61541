"""``python -m bench wavefronts``: the lanes of a compiled layout land on the elements the compiler says, the
tallies of the interpreter's loads follow from them, and the compiled layouts are read from the TTGIR."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import compiled_json

from bench import wavefronts as wf

# what sm_90 gives the taps of an 8×16 tile at 2 warps, and of a 16×8 one (TTGIR, 2026-12-04): rows vary fastest
ROWS_8 = dict(sizePerThread=[1, 1, 1], threadsPerWarp=[1, 8, 4], warpsPerCTA=[1, 1, 2], order=[0, 1, 2])
ROWS_16 = dict(sizePerThread=[1, 1, 1], threadsPerWarp=[1, 16, 2], warpsPerCTA=[1, 1, 2], order=[0, 1, 2])


def _cells(flat, shape):
    return {tuple(int(v) for v in np.unravel_index(int(f), shape)) for f in flat}


def test_layout_slots_follow_the_layout():
    """8 rows × 4 columns per warp request, rows fastest; the second warp and the second register move along W."""
    shape = (1, 8, 16)
    s = wf.layout_slots(shape, ROWS_8)
    assert s.shape == (2, 2, 32)
    assert _cells(s[0, 0], shape) == {(0, r, c) for r in range(8) for c in range(4)}
    assert _cells(s[1, 0], shape) == {(0, r, c) for r in range(8) for c in range(4, 8)}
    assert _cells(s[0, 1], shape) == {(0, r, c) for r in range(8) for c in range(8, 12)}
    assert [tuple(np.unravel_index(int(f), shape)) for f in s[0, 0, :3]] == [(0, 0, 0), (0, 1, 0), (0, 2, 0)]
    assert sorted(s.reshape(-1).tolist()) == list(range(128))  # each element once


def test_layout_slots_repeat_what_a_small_tile_cannot_fill():
    """An 8×8 tile under a 16-row footprint (4 warps of 4 rows): every element is held, and loaded, twice."""
    lay = dict(sizePerThread=[1, 1, 1], threadsPerWarp=[1, 4, 8], warpsPerCTA=[1, 4, 1], order=[2, 0, 1])
    s = wf.layout_slots((1, 8, 8), lay)
    assert s.shape == (4, 1, 32)
    assert np.bincount(s.reshape(-1), minlength=64).tolist() == [2] * 64
    assert _cells(s[2, 0], (1, 8, 8)) == _cells(s[0, 0], (1, 8, 8))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(ROWS_8, threadsPerWarp=[1, 8, 2]), "32 lanes"),
        (dict(ROWS_8, order=[0, 1]), "3-D"),
    ],
)
def test_layout_slots_refuse_a_malformed_layout(bad, message):
    with pytest.raises(ValueError, match=message):
        wf.layout_slots((1, 8, 16), bad)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts the interpreter's loads")
def test_taller_warps_touch_more_lines():
    """Same work, same lanes, same number of requests per output; the 16-row warp footprint of a 16×8 tile
    touches more 128-byte lines per request than the 8-row one of 8×16 (C8 views of one image)."""
    got = wf.count({"8x16x1x2": {"1x8x16": ROWS_8}, "16x8x1x2": {"1x16x8": ROWS_16}}, "C8", side=16)
    a, b = got["8x16x1x2"], got["16x8x1x2"]
    assert a["lanes"] == pytest.approx(b["lanes"]) and a["lanes"] > 1.0  # quarter turns read 1 tap, others up to 4
    for r in (a, b):
        assert r["lanes"] / 32 <= r["requests"] <= r["lines"] <= r["sectors"] <= r["lanes"]
    assert b["lines"] / b["requests"] > 1.2 * a["lines"] / a["requests"]


def test_spearman_and_the_sweep_log(tmp_path):
    assert wf.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert wf.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert wf.spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)  # ties share their rank
    log = tmp_path / "sweep.log"
    log.write_text(
        f"{wf.SWEEP_CASE}   taps  default   1.6729 ms   28.0%\n"
        f"{wf.SWEEP_CASE}   taps  8x16x1x2  1.0295 ms   45.5%\n"
        "orbit C16 B=256 224->96 crop 0.8   taps  8x16x1x2  0.5 ms   36.2%\n"
    )
    assert wf.read_sweep(str(log)) == {"8x16x1x2": 1.0295}
    with pytest.raises(ValueError, match="TILE_HxTILE_W"):
        wf.parse_config("8x16x1")


def test_compiled_layouts_are_read_from_the_ttgir():
    """Compiled for sm_90 without a GPU (a process without the interpreter): the tap loads of an 8×16 tile at
    2 warps have one blocked layout of 32 lanes over 2 warps."""
    code = (
        "import json; from bench import wavefronts as wf\n"
        "print('@@' + json.dumps(wf.load_layouts([(8, 16, 1, 2)], side=16)))"
    )
    got = compiled_json(code)
    (lay,) = got["8x16x1x2"].values()
    assert int(np.prod(lay["threadsPerWarp"])) == 32 and int(np.prod(lay["warpsPerCTA"])) == 2
    assert list(got["8x16x1x2"]) == ["1x8x16"]
