"""kron: compress pre-trained Transformers with Kronecker decomposition and knowledge distillation."""

__version__ = "0.1.0"


def load_student(workspace_or_dir):
    """Reload a factorized student from a workspace or its student/ folder (see kroncli.student)."""
    from .student import load_student as _load

    return _load(workspace_or_dir)


__all__ = ["__version__", "load_student"]
