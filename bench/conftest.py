"""pytest-benchmark glue: ``pytest bench --benchmark-only`` times the same closures as ``python -m bench``."""

from __future__ import annotations

import pytest
import torch

from bench import cases as C

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# small sizes on a CPU so the whole pytest run stays short; the CLI has the full sweep
BATCH = 64 if DEVICE == "cuda" else 16


def run_case(benchmark, cfg: C.Config, provider: str) -> None:
    """Time ``cfg`` for ``provider``, skipping (with the reason) where the provider cannot run."""
    try:
        b = C.build(cfg, provider, DEVICE)
    except C.Unavailable as e:
        pytest.skip(f"{provider}: {e}")
    benchmark.group = f"{cfg.case} {cfg.label}"
    benchmark.extra_info.update(provider=provider, device=DEVICE, bytes=b.bytes, out_shape=b.out_shape)
    if DEVICE == "cuda":
        fn = b.fn

        def timed():
            fn()
            torch.cuda.synchronize()  # each round waits for the GPU, so the wall time is the GPU time

        b = C.Bench(timed, b.bytes, b.out_shape)
    if cfg.case.startswith("step"):
        benchmark.pedantic(b.fn, rounds=3, warmup_rounds=1, iterations=1)
    else:
        benchmark(b.fn)
    if b.bytes and benchmark.stats is not None:
        benchmark.extra_info["gbps"] = b.bytes / benchmark.stats.stats.median / 1e9
