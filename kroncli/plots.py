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


def write_plots(table: pd.DataFrame, paths: list[str], out: Path) -> list[Path]:
    """score vs compression, training curves, per-layer error, latency vs batch; only those with data."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    written = []

    if "glue_avg" in table and table["glue_avg"].notna().any():
        fig, ax = plt.subplots(figsize=(6, 4))
        for _, r in table[table["glue_avg"].notna()].iterrows():
            teacher = r["model"] == "teacher" or r.get("compression") == 1.0
            ax.scatter(r["compression"], r["glue_avg"], marker="*" if teacher else "o", s=120 if teacher else 50)
            ax.annotate(f"{r['workspace']} {r['model']}", (r["compression"], r["glue_avg"]), fontsize=7)
        ax.set_xlabel("compression (x)")
        ax.set_ylabel("GLUE dev average")
        ax.set_title("score vs compression (* = teacher)")
        written.append(_save(fig, out / "score_vs_compression.png", plt))

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

    layer_frames = [(Path(p).name, _read_csv(Workspace(p).metrics_dir / "factorize.csv")) for p in paths]
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

    speed_frames = [(Path(p).name, _read_csv(Workspace(p).metrics_dir / "speed.csv")) for p in paths]
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
