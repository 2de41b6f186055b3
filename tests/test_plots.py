"""kron report --plot: the score-vs-compression figure of two workspaces labels every model without a label
drawn over another (the teachers of two workspaces share one point; their students sit close)."""

from __future__ import annotations

import itertools

import pandas as pd

from kroncli import plots


def _figures(monkeypatch, table, tmp_path) -> dict:
    """write_plots' figures, kept open (by name) instead of closed after saving."""
    kept = {}

    def save(fig, path, plt):
        fig.canvas.draw()
        kept[path.stem] = fig
        return path

    monkeypatch.setattr(plots, "_save", save)
    plots.write_plots(table, [], tmp_path)
    return kept


def test_labels_of_two_workspaces_do_not_overlap(monkeypatch, tmp_path):
    rows = [("runs/m19", "student", 19.05, 75.31), ("runs/m19", "teacher", 1.0, 80.12),
            ("runs/m19-mrpc", "student", 19.05, 75.48), ("runs/m19-mrpc", "teacher", 1.0, 80.12),
            ("runs/kb8", "student", 8.2, 77.9)]
    table = pd.DataFrame(rows, columns=["workspace", "model", "compression", "glue_avg"])
    fig = _figures(monkeypatch, table, tmp_path)["score_vs_compression"]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].texts if t.get_text()]
    assert sorted(t.get_text() for t in labels) == sorted(f"{w} {m}" for w, m, _, _ in rows)
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in labels}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), (a, b)
    # the same table, the same picture
    again = _figures(monkeypatch, table, tmp_path)["score_vs_compression"]
    assert [t.get_position() for t in again.axes[0].texts] == [t.get_position() for t in fig.axes[0].texts]
    assert [t.get_text() for t in again.axes[0].texts] == [t.get_text() for t in fig.axes[0].texts]


def test_the_figure_is_written(tmp_path):
    table = pd.DataFrame([("a", "student", 19.0, 75.0), ("a", "teacher", 1.0, 80.0)],
                         columns=["workspace", "model", "compression", "glue_avg"])
    (path,) = plots.write_plots(table, [], tmp_path)
    assert path.name == "score_vs_compression.png" and path.read_bytes()[:4] == b"\x89PNG"
