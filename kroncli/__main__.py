"""`python -m kroncli`, `accelerate launch -m kroncli`, `torchrun -m kroncli`."""

from .cli import main

if __name__ == "__main__":
    main()
