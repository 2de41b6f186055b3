"""`kron report --plot DIR`: PNG figures with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .report import _read_csv
from .workspace import Workspace


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# where a label may sit, in points from its marker: the four corners close by, then further out
NEAR = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 16), (-6, 16), (6, -24), (-6, -24)]
PAD = 1.0  # pixels kept free around each label


def _label_offsets():
    yield from NEAR
    for k in range(1, 400):  # then a column above and one below the marker, one label height per step
        yield (10, 16 + 10 * k)
        yield (10, -24 - 10 * k)


def place_labels(ax, points: list[tuple]) -> list:
    """Annotate each (x, y, text, colour), in the given order, at the first offset where its box meets no label placed
    before it (measured by the renderer, so the same data always gives the same picture); a label moved away from
    its marker gets a thin line to it. Labels are left out of tight_layout, so laying the figure out again does
    not move them relative to each other. Returns the label annotations."""
    fig = ax.get_figure()
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed, labels = [], []
    for x, y, text, colour in points:
        def make(dx, dy, text=text, x=x, y=y, colour=colour):
            return ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, color=colour,
                               ha="left" if dx > 0 else "right", annotation_clip=False)

        chosen = None  # the first free place inside the axes, else the first free place
        for dx, dy in _label_offsets():
            label = make(dx, dy)
            box = label.get_window_extent(renderer).padded(PAD)
            free = not any(box.overlaps(other) for other in placed)
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            if free and (fits or chosen is None):
                if chosen is not None:
                    chosen[0].remove()
                chosen = (label, box, dx, dy)
                if fits:
                    break
            else:
                label.remove()
        if chosen is None:  # no free place at all (hundreds of labels): the last one tried
            chosen = (make(dx, dy), box, dx, dy)
        label, box, dx, dy = chosen
        label.set_in_layout(False)
        if (dx, dy) not in NEAR[:4]:
            line = ax.annotate("", (x, y), xytext=(dx, dy + 3), textcoords="offset points", annotation_clip=False,
                               arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5", shrinkA=0, shrinkB=3))
            line.set_in_layout(False)
        placed.append(box)
        labels.append(label)
    return labels


def score_vs_compression(table: pd.DataFrame, plt):
    """GLUE average against compression, a marker and a label in its colour per model (teachers as stars)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = table[table["glue_avg"].notna() & table["compression"].notna()]
    points = []
    for _, r in rows.iterrows():
        teacher = r["model"] == "teacher" or r.get("compression") == 1.0
        dots = ax.scatter(r["compression"], r["glue_avg"], marker="*" if teacher else "o", s=120 if teacher else 50)
        points.append((r["compression"], r["glue_avg"], f"{r['workspace']} {r['model']}", dots.get_facecolor()[0]))
    ax.margins(0.25)  # room for the labels
    ax.set_xlabel("compression (x)")
    ax.set_ylabel("GLUE dev average")
    ax.set_title("score vs compression (* = teacher)")
    fig.tight_layout()  # the final layout first: labels are placed in its coordinates
    place_labels(ax, points)
    return fig


MARKERS = "osD^vP<>Xh"  # one per method, in order of first appearance


def latency_column(table: pd.DataFrame) -> str | None:
    """The latency the score-vs-latency figure uses: the (batch, length) most rows were timed at, batch 1 first."""
    from .report import LATENCY

    cols = [c for c in table.columns if c.startswith(LATENCY)]
    if not cols:
        return None

    def key(c):
        batch, seq = c[len(LATENCY) + 1:].split("x")
        return (-int(table[c].notna().sum()), int(batch) != 1, int(batch), -int(seq))

    return min(cols, key=key)


def _scored(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """Rows with a GLUE average and `x`, the paper's left out (its averages are over all nine test-server tasks, a
    workspace's over the dev tasks it was scored on); students without a method are kronecker."""
    from .report import DEFAULT_METHOD

    if x not in table or "glue_avg" not in table:
        return table.iloc[:0]
    rows = table[table["glue_avg"].notna() & table[x].notna() & (table["workspace"] != "paper")].copy()
    rows["method"] = rows["method"].fillna(DEFAULT_METHOD) if "method" in rows else DEFAULT_METHOD
    rows[x] = rows[x].astype(float)
    return rows


def score_vs(rows: pd.DataFrame, x: str, xlabel: str, plt):
    """GLUE average against `x` (parameters, latency; log scale): one series per method (colour and marker, in the
    legend), the teachers as black stars (one point and one label for a teacher several workspaces share), each
    point labelled with its workspace where no other label is."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = []
    students = rows[rows["model"] != "teacher"]
    for i, (method, sub) in enumerate(students.groupby("method", sort=False)):
        dots = ax.scatter(sub[x], sub["glue_avg"], marker=MARKERS[i % len(MARKERS)], s=50, label=method)
        colour = dots.get_facecolor()[0]
        points += [(r[x], r["glue_avg"], str(r["workspace"]), colour) for _, r in sub.iterrows()]
    teachers = rows[rows["model"] == "teacher"]
    if len(teachers):
        shared = teachers.groupby([x, "glue_avg"], sort=False)["workspace"].apply(lambda w: ", ".join(map(str, w)))
        ax.scatter([tx for tx, _ in shared.index], [ty for _, ty in shared.index], marker="*", s=160, color="black",
                   label="teacher")
        points += [(tx, ty, f"teacher ({names})", "black") for (tx, ty), names in shared.items()]
    ax.set_xscale("log")
    ax.margins(0.25)  # room for the labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GLUE dev average")
    ax.set_title(f"score vs {xlabel.split(' (')[0]}")
    # beside the axes, where it covers no point and no label
    ax.legend(fontsize=7, title="method", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              markerscale=0.7)
    fig.tight_layout()  # the final layout first: labels are placed in its coordinates
    place_labels(ax, points)
    return fig


def write_plots(table: pd.DataFrame, paths: list[str], out: Path) -> list[Path]:
    """score vs compression, parameters and latency; training curves, per-layer error, latency vs batch; only those
    with data."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    written = []

    if "glue_avg" in table and table["glue_avg"].notna().any():
        if "compression" in table:
            written.append(_save(score_vs_compression(table, plt), out / "score_vs_compression.png", plt))
        latency = latency_column(table)
        for x, name in (("params", "score_vs_params"), (latency, "score_vs_latency")):
            rows = _scored(table, x) if x else table.iloc[:0]
            if len(rows):
                label = "parameters" if x == "params" else "latency (ms, batch {} x {} tokens)".format(
                    *x.split(" b")[1].split("x"))
                written.append(_save(score_vs(rows, x, label, plt), out / f"{name}.png", plt))

    curves = [(Path(p), f) for p in paths for f in sorted((Path(p) / "metrics").glob("*.csv"))
              if f.stem.startswith(("distill", "finetune"))]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for ws, f in curves:
            df = _read_csv(f)
            if df is not None and "total" in df:
                df = df[df["total"].notna()]
                # markers where a curve has few rows: a short run's one logged step is a point, not nothing
                ax.plot(df["step"], df["total"], marker="." if len(df) <= 50 else None, label=f"{ws.name}/{f.stem}")
        ax.set_xlabel("step")
        ax.set_ylabel("total loss")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
        ax.set_title("training curves")
        written.append(_save(fig, out / "training_curves.png", plt))

    layer_frames = [(Path(p).name, _read_csv(Workspace(p).metrics_csv("factorize"))) for p in paths]
    layer_frames = [(n, df) for n, df in layer_frames if df is not None]
    if layer_frames:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, df in layer_frames:
            df = df[df["rank"] > 0]
            ax.plot(range(len(df)), df["rel_error"], marker=".", label=name)
        ax.set_xlabel("factored matrix (model order)")
        ax.set_ylabel("relative error of the init")
        ax.legend(fontsize=7)
        ax.set_title("per-layer reconstruction error")
        written.append(_save(fig, out / "layer_error.png", plt))

    speed_frames = [(Path(p).name, _read_csv(Workspace(p).speed_csv)) for p in paths]
    speed_frames = [(n, df) for n, df in speed_frames if df is not None and "latency_ms" in df]
    if speed_frames:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, df in speed_frames:
            for model, grp in df.groupby("model"):
                grp = grp.groupby("batch", as_index=False)["latency_ms"].median()
                ax.plot(grp["batch"], grp["latency_ms"], marker="o", label=f"{name} {model}")
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency (ms)")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax.set_title("latency vs batch size")
        written.append(_save(fig, out / "latency_vs_batch.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
