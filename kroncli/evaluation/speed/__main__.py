"""`python -m kroncli.evaluation.speed SPEC`: the CPU memory worker (memory.py), one fresh process per model."""

import sys

from .memory import main

sys.exit(main(sys.argv[1:]))
