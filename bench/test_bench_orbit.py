"""pytest-benchmark: ``orbit`` for every provider (``pytest bench --benchmark-only``)."""

import pytest

from bench import cases as C
from bench.conftest import BATCH, run_case


@pytest.mark.parametrize("provider", C.PROVIDERS)
@pytest.mark.parametrize("case", ["orbit"])
@pytest.mark.parametrize("n, shape", [(8, "3x32x32"), (4, "1x28x28"), (8, "3x224x224")])
def test_bench_orbit(benchmark, case, n, shape, provider):
    run_case(benchmark, C.Config(case, BATCH, n, shape), provider)
