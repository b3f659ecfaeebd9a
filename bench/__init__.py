"""Benchmarks that print JSON, one module each, run from the repository root:

    python -m bench.pipeline --streams 10 --rate 100

``python bench/pipeline.py`` works too: run as a file, a bench re-runs itself as the module
(:mod:`bench._script`), so every bench imports the project and its sibling benches the one
way, as packages, with no edit of ``sys.path``. Their shared pieces are in :mod:`bench.harness`.
"""
