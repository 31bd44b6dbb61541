"""Benchmarks of canon against equiadapt: ``python -m bench`` (suite), ``profile``, ``kernels``, ``plot``.

See docs/benchmarks.md. Modules: :mod:`bench.cases` (cases, providers, timers, rows),
:mod:`bench.baselines` (equiadapt's operations in torch), :mod:`bench.plots`,
:mod:`bench.profiler`, :mod:`bench.kernel_report`.
"""
