"""pytest-benchmark: every case × mode × provider on small sizes (``pytest bench --benchmark-only``).

The closures are the ones ``python -m bench`` times (:func:`bench.registry.build`); a provider that
cannot run here is skipped with its reason. ``pytest bench --benchmark-disable`` runs each closure
once, as a smoke test.
"""

from __future__ import annotations

import pytest
import torch

from bench.cases import CASES
from bench.registry import MODES, PROVIDERS, REGISTRY, Config, Unavailable, build

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# small sizes on a CPU so the whole pytest run stays short; the CLI has the full sweep
BATCH = 64 if DEVICE == "cuda" else 16

# (case, N, shape): one point of every case in every mode, and a few more sizes in the case's default mode
POINTS = [(case, 8, "3x32x32", mode) for case in CASES for mode in MODES]
POINTS += [("orbit", 4, "1x28x28", "forward"), ("orbit", 8, "3x224x224", "forward")]
POINTS += [("step", 4, "1x28x28", "full"), ("step-no-encoder", 4, "1x28x28", "full")]


def _id(point) -> str:
    case, n, shape, mode = point
    return f"{case}-{mode}-C{n}-{shape}"


def _synchronized(fn):
    def timed():
        fn()
        torch.cuda.synchronize()  # each round waits for the GPU, so the wall time is the GPU time

    return timed


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("point", POINTS, ids=_id)
def test_bench(benchmark, point, provider):
    case, n, shape, mode = point
    cfg = Config(case, BATCH, n, shape, mode=mode)
    try:
        b = build(cfg, provider, DEVICE)
    except Unavailable as e:
        pytest.skip(f"{provider}: {e}")
    benchmark.group = f"{case} {mode} {cfg.label}"
    benchmark.extra_info.update(provider=provider, mode=mode, device=DEVICE, bytes=b.bytes, out_shape=b.out_shape)
    fn = _synchronized(b.fn) if DEVICE == "cuda" else b.fn
    if REGISTRY[case].min_reps < 5:  # steps: a few rounds are enough
        benchmark.pedantic(fn, rounds=3, warmup_rounds=1, iterations=1)
    else:
        benchmark(fn)
    if b.bytes and benchmark.stats is not None:
        benchmark.extra_info["gbps"] = b.bytes / benchmark.stats.stats.median / 1e9
