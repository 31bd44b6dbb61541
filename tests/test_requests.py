"""Memory-request budgets of the kernel variants a redesign touches (``python -m bench requests``), counted
under the Triton interpreter: a redesigned bilinear or backward variant that issues more requests per output
element than its budget fails here, before any GPU is lent."""

import os

import pytest

pytest.importorskip("triton", reason="the request counts run the Triton kernels")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="requests are counted under the Triton interpreter"
)

from bench import requests  # noqa: E402

# budgets per output element on the tiny scenarios (B=1, C=1, 8×8 images); measured 2026-12-04 in brackets
BUDGETS = {
    # one bilinear view pixel: 4 tap loads, one store [4 lanes, 2.72× the minimum bytes]
    "orbit bilinear C8 (taps)": dict(load_lanes_per_out=4.0, amplification=3.0),
    # the same views sampled once per quarter-turn family and stored turned (off by default): a quarter of
    # the taps [1 lane, 1.35×]
    "orbit bilinear C8, quarter-turn families": dict(load_lanes_per_out=1.2, amplification=1.5),
    # the triangle filter of a 2× shrink: a few dozen taps [74 lanes, 7.67×]
    "orbit antialiased C8 shrink": dict(load_lanes_per_out=80.0, amplification=8.5),
    # the gather adjoint: candidates per input pixel and view [32 lanes, 3.0×; 72 before the window
    # started at its first integer (2026-12-04)], no atomics
    "orbit backward C8 shrink, zeros (pull)": dict(load_lanes_per_out=36.0, amplification=3.5, atomic_lanes_per_out=0),
    # the padded split: the same pull, atomics only for folded pixels [34 lanes, 3.0×, 0.5 atomic bytes]
    "orbit backward C8 shrink, border (in-range pull + folded scatter)": dict(
        load_lanes_per_out=38.0, amplification=3.5, atomic_bytes_per_out=1.0
    ),
    # canonicalize backward: adjoint pull + 8 inner products (one tap for quarter turns) + folded corners
    # [38 lanes, 10.3×, 1.9 atomic bytes]
    "canonicalize backward C8 border (pull + inner products + folded scatter)": dict(
        load_lanes_per_out=44.0, amplification=11.0, atomic_bytes_per_out=4.0
    ),
}


@pytest.fixture(scope="module")
def rows():
    chosen = requests.scenarios(B=1, C=1, side=8, only=set(BUDGETS))
    assert {s.name for s in chosen} == set(BUDGETS)
    return {s.name: requests.measure(s) for s in chosen}


@pytest.mark.parametrize("name", BUDGETS)
def test_variant_stays_within_its_request_budget(rows, name):
    row = rows[name]
    assert row["store_bytes_per_out"] >= 4.0 and row["load_bytes_per_out"] > 0  # every output written
    over = {k: (row[k], limit) for k, limit in BUDGETS[name].items() if row[k] > limit}
    assert not over, f"{name}: over budget {over}"


def test_padded_split_sends_far_fewer_atomics_than_the_scatter(monkeypatch):
    """The in-range pull leaves atomics to the folded pixels only: on a 45° view of the whole image (corners
    outside) it sends under a quarter of the full scatter's atomic bytes."""
    from canon.kernels import resample

    def atomic_bytes(mode):
        monkeypatch.setattr(resample, "BORDER_ADJOINT", mode)
        name = "canonicalize backward C8 border (pull + inner products + folded scatter)"
        (s,) = requests.scenarios(B=1, C=1, side=8, only={name})
        return requests.measure(s)["atomic_bytes_per_out"]

    split, scatter = atomic_bytes("pull"), atomic_bytes("scatter")
    assert 0 < split < scatter / 4, (split, scatter)
