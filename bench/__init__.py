"""The benchmark harness behind ``make bench``: Portcullis against nginx and a bare Python proxy.

Run it with ``python -m bench.run`` from the repository root; see ``bench/README.md``.
"""
