"""Paper presets, kept apart from the search so the CLI can list them without importing torch."""

from __future__ import annotations

# The paper's uniform shapes (Table 1), written relative to the matrix so they apply to any width:
# ("B", (m2, n2)) fixes B's shape, ("A", (m1, n1)) fixes A's, ("f", f) is the embedding's B = 1 x f.
# ffn_out is ffn_in's A transposed (Table 1: "for the other layer, the dimensions are swapped"); parameter
# counts against the paper's: docs/method.md, Presets.
PRESETS: dict[str, dict[str, tuple[str, object]]] = {
    "kroneckerbert8": {"attention": ("B", (2, 2)), "ffn_in": ("A", (8, 2)), "ffn_out": ("A", (2, 8)),
                       "embedding": ("f", 8)},
    "kroneckerbert21": {"attention": ("B", (2, 16)), "ffn_in": ("A", (16, 2)), "ffn_out": ("A", (2, 16)),
                        "embedding": ("f", 16)},
}
