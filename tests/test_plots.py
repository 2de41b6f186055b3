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


def test_score_against_params_and_latency_has_a_series_per_method_and_the_teacher_marked(monkeypatch, tmp_path):
    """Two methods at two budgets, their teacher (one point, shared by four workspaces) and a paper row: one legend
    entry per method and one for the teacher, the paper row left out, no label over another."""
    rows = [("runs/k19", "student", "kronecker", 1.2e6, 75.3, 9.0),
            ("runs/k5", "student", "kronecker", 4.5e6, 78.1, 14.0),
            ("runs/l19", "student", "lowrank", 1.2e6, 74.0, 8.0),
            ("runs/l5", "student", "lowrank", 4.5e6, 77.9, 12.5),
            ("runs/n5", "student", None, 4.4e6, 76.0, 11.0)]
    rows += [(ws, "teacher", None, 22.7e6, 80.1, 31.0) for ws in ("runs/k19", "runs/k5", "runs/l19", "runs/l5")]
    table = pd.DataFrame(rows, columns=["workspace", "model", "method", "params", "glue_avg", "latency_ms b1x128"])
    table = pd.concat([table, pd.DataFrame([{"workspace": "paper", "model": "KroneckerBERT8", "params": 14.3e6,
                                             "glue_avg": 77.7}])], ignore_index=True)
    figs = _figures(monkeypatch, table, tmp_path)
    for name, x in (("score_vs_params", "params"), ("score_vs_latency", "latency_ms b1x128")):
        ax = figs[name].axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["kronecker", "lowrank", "teacher"], name
        labels = [t for t in ax.texts if t.get_text()]
        texts = sorted(t.get_text() for t in labels)
        assert texts == sorted(["runs/k19", "runs/k5", "runs/l19", "runs/l5", "runs/n5",
                                "teacher (runs/k19, runs/k5, runs/l19, runs/l5)"]), name
        renderer = figs[name].canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), name
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer)) and not any(legend.overlaps(b) for b in boxes)
        xs = sorted(float(v) for coll in ax.collections for v, _ in coll.get_offsets())
        assert xs == sorted(table[table.workspace != "paper"].drop_duplicates(["model", x, "glue_avg"])[x]), name
    assert "batch 1 x 128" in figs["score_vs_latency"].axes[0].get_xlabel()


def _workspace(root, name, method, params, mrpc, latency):
    """A workspace as kron leaves it, reduced to what the report reads: manifest, student/kron.json (with the
    `method` key that kron factorize --method writes, or without it), eval.csv and speed.csv rows."""
    import json

    ws = root / name
    (ws / "student").mkdir(parents=True)
    (ws / "metrics").mkdir()
    (ws / "manifest.json").write_text(json.dumps({"teacher": {"params": 22_700_000}, "stages": {
        "factorize": {"done": True, "student_params": params, "compression": 22_700_000 / params}}}))
    kron = {"format_version": 1, "architecture": "BertModel", "layers": {}}
    (ws / "student" / "kron.json").write_text(json.dumps({**kron, **({"method": method} if method else {})}))
    (ws / "metrics" / "eval.csv").write_text(
        "workspace,model,task,split,metric,value,n,seconds,timestamp\n"
        f"{ws},student,MRPC,dev,combined,{mrpc},408,1.0,2026-01-01T00:00:00\n"
        f"{ws},teacher,MRPC,dev,combined,82.0,408,1.0,2026-01-01T00:00:00\n")
    (ws / "metrics" / "speed.csv").write_text(
        "timestamp,model,device,batch,seq_len,latency_ms,speedup\n"
        f"2026-01-01T00:00:00,student,cpu,1,128,{latency},2.0\n2026-01-01T00:00:00,teacher,cpu,1,128,30.0,1.0\n")
    return str(ws)


def test_the_report_reads_each_workspaces_method_and_latency_for_the_figures(monkeypatch, tmp_path):
    from kroncli.report import build_table

    paths = [_workspace(tmp_path, "k19", None, 1_200_000, 76.5, 9.0),
             _workspace(tmp_path, "l19", "lowrank", 1_200_000, 74.0, 8.0)]
    table = build_table(paths)
    students = table[table.model == "student"].set_index("workspace")
    assert students.loc["k19", "method"] == "kronecker" and students.loc["l19", "method"] == "lowrank"
    assert students.loc["l19", "latency_ms b1x128"] == 8.0
    assert set(table[table.model == "teacher"]["latency_ms b1x128"]) == {30.0}
    figs = _figures(monkeypatch, table, tmp_path / "plots")
    for name in ("score_vs_params", "score_vs_latency"):
        legend = [t.get_text() for t in figs[name].axes[0].get_legend().get_texts()]
        assert legend == ["kronecker", "lowrank", "teacher"], name
