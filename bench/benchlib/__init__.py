"""What the benchmark scripts in ``bench/`` share; not benchmarks themselves (they print no summary line).

- ``verdict``: the ``met`` / ``not met`` / ``undecided`` ending of a summary line, from per-repeat ratios.
- ``warc_corpus``: the reproducible WARC crawl of ``data_throughput.py --path web``.
"""
