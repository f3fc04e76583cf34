"""``python -m tests.bench --help``."""

from ._run import main

main()
