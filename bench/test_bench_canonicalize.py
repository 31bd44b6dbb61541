"""pytest-benchmark: ``canonicalize`` for every provider (``pytest bench --benchmark-only``)."""

import pytest

from bench import cases as C
from bench.conftest import BATCH, run_case


@pytest.mark.parametrize("provider", C.PROVIDERS)
@pytest.mark.parametrize("case", ["canonicalize"])
@pytest.mark.parametrize("n, shape", [(8, "3x32x32")])
def test_bench_canonicalize(benchmark, case, n, shape, provider):
    run_case(benchmark, C.Config(case, BATCH, n, shape), provider)
