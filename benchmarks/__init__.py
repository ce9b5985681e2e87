"""The dsv3-mini benchmarks and reproductions, run from the repository's root as ``python -m benchmarks.run_all``
(``make bench``). One module per item, ``common`` for timing and machine facts, ``repro`` for the shared training
runs; what each item measures: benchmarks/README.md."""
