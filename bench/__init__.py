"""SandTrap's benchmark harness: side-by-side figures against peers, measured in one run.

Run with `python -m bench [--quick] [--only NAME ...] [--write docs/performance.md]`. Nothing here
asserts on absolute times; every figure is printed with its peer and their ratio (issues 3 and 8).
"""
