"""Zero-shot STS-B: how much of the teacher's sentence meaning a student keeps, before any task training.

Each model embeds the two sentences of every STS-B dev pair on its own (mean of the last hidden states over
real tokens, the way all-MiniLM-L6-v2 was trained) and the cosine of the two vectors is correlated with the
gold score. No head, no fine-tuning: the figure measures the general (stage-1) student directly, in
seconds, and shows what stage 2 keeps or destroys when run on a task student. Teacher and students are
scored side by side in one run.

    python benchmarks/zero_shot_sts.py runs/m19 runs/m19/tasks/mrpc/student
    python benchmarks/zero_shot_sts.py --teacher path/to/bert runs/kb8 --limit 500

Arguments are workspaces (their stage-1 student), student folders (a task student) or plain transformers
folders (e.g. a workspace's fine-tuned tasks/<task>/teacher, for reference). GLUE comes from
--data-dir, else $KRON_GLUE_DIR, else ../shared/glue.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import pearsonr, spearmanr


def sentence_vectors(model, tokenizer, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
    """Mean of the last hidden states over real tokens, one vector per sentence."""
    body = getattr(model, "base_model", model)
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
        with torch.inference_mode():
            hidden = body(**batch)[0]
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def score(model, tokenizer, pairs: pd.DataFrame) -> dict:
    t0 = time.perf_counter()
    a = sentence_vectors(model, tokenizer, pairs.sentence1.tolist())
    b = sentence_vectors(model, tokenizer, pairs.sentence2.tolist())
    cos = torch.nn.functional.cosine_similarity(a, b).numpy()
    return {"pearson": 100 * pearsonr(cos, pairs.score)[0], "spearman": 100 * spearmanr(cos, pairs.score)[0],
            "seconds": time.perf_counter() - t0}


def load_any(path: str):
    """A Kronecker student (workspace or student folder), else a plain transformers model folder."""
    import kroncli
    from kroncli.errors import KronError
    from transformers import AutoModel

    try:
        return kroncli.load_student(path)
    except KronError:
        return AutoModel.from_pretrained(path)


def main() -> None:
    from transformers import AutoTokenizer

    from kroncli import sources

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="*", help="workspaces or student folders")
    ap.add_argument("--teacher", default=None, help="teacher (default: the offline all-MiniLM-L6-v2)")
    ap.add_argument("--data-dir", default=os.environ.get("KRON_GLUE_DIR", "../shared/glue"))
    ap.add_argument("--limit", type=int, default=None, help="first N dev pairs")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = Path(args.data_dir) / "STS-B" / "dev.tsv"
    if not dev.is_file():
        raise SystemExit(f"no {dev}; pass --data-dir with GLUE's STS-B folder (or set KRON_GLUE_DIR)")
    pairs = pd.read_csv(dev, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
    pairs = pairs.iloc[: args.limit] if args.limit else pairs
    source = sources.resolve(args.teacher)
    teacher, _ = sources.load_model(source)
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    rows = [{"model": f"teacher ({source.requested})", **score(teacher.eval(), tokenizer, pairs)}]
    for path in args.students:
        rows.append({"model": path, **score(load_any(path).eval(), tokenizer, pairs)})
    table = pd.DataFrame(rows)
    table["kept"] = table.pearson / table.pearson.iloc[0]
    print(f"STS-B dev, {len(pairs)} pairs, cosine of mean-pooled last hidden states, {torch.get_num_threads()} "
          "threads")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
