"""Benchmarks of canon against equiadapt: ``python -m bench`` (suite), ``profile``, ``kernels``, ``plot``.

See docs/benchmarks.md. Modules: :mod:`bench.registry` (providers, modes, the case registry, the
closure of one mode), :mod:`bench.cases` (the case builders and size points), :mod:`bench.timers`,
:mod:`bench.rows` (the CSV schema, environment, one row per measurement), :mod:`bench.baselines`
(equiadapt's operations in torch), :mod:`bench.peers`, :mod:`bench.plots`, :mod:`bench.profiler`,
:mod:`bench.kernel_report`.
"""
