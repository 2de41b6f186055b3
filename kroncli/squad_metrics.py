"""SQuAD scoring: the official v1.1 / v2.0 evaluation, and start/end logits -> answer text.

Scoring follows the official scripts (`evaluate-v1.1.py`, `evaluate-v2.0.py`):

- answers are normalised (lower case, punctuation removed, the articles a/an/the removed, whitespace
  collapsed) before comparison;
- exact match and token-level F1 are the maximum over a question's gold answers;
- v1.1: every gold answer counts; a question without a prediction scores 0;
- v2.0: gold answers that normalise to nothing are dropped and an unanswerable question (no gold answer)
  is scored against the empty string, so predicting "" is right for it; F1 of two empty token lists is 1,
  of one empty list 0. Results are broken down into HasAns / NoAns. With per-question no-answer
  probabilities (`na_probs`, here the null-score difference), a question with ``na_prob > na_prob_thresh``
  counts as a "" prediction, and the threshold that maximises EM (F1) over the data is searched
  (`best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`) as `find_best_thresh` does officially
  (except the threshold reported when predicting no answer everywhere is best: see `find_best_thresh`).

Result keys are the official v2.0 names for both versions: ``exact``, ``f1`` (0-100) and ``total``.

`postprocess` turns per-feature start/end logits into one answer per question the way BERT's SQuAD
script does: the `n_best` highest start and end logits of each feature give candidate spans (inside the
context, end >= start, at most `max_answer_len` tokens), scored ``start + end``; the best one over all
features of the question wins. v2.0: the null score is the smallest ``start[CLS] + end[CLS]`` over the
question's features, and "" is predicted when ``null - best_non_null > null_threshold``.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


# ------------------------------------------------------------------------------------------ normalisation

def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official normalisation)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_score(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_score(gold: str, pred: str, version: int = 2) -> float:
    """Token F1 after normalisation; v2.0 scores two empty answers 1 (v1.1: 0, as its script does)."""
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if version == 2 and (not gold_toks or not pred_toks):
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------- evaluation

def _golds(answers: Sequence[str], version: int) -> list[str]:
    if version == 1:
        return list(answers) or [""]
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def raw_scores(gold: Mapping[str, Sequence[str]], preds: Mapping[str, str], version: int = 2
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question (exact, f1): the max over gold answers; a missing prediction counts as ""."""
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        pred = preds.get(qid, "")
        golds = _golds(answers, version)
        if version == 1 and qid not in preds:
            exact[qid], f1[qid] = 0.0, 0.0
            continue
        exact[qid] = float(max(exact_score(a, pred) for a in golds))
        f1[qid] = max(f1_score(a, pred, version) for a in golds)
    return exact, f1


def apply_no_ans_threshold(scores: Mapping[str, float], na_probs: Mapping[str, float],
                           has_ans: Mapping[str, bool], thresh: float) -> dict[str, float]:
    """Questions with na_prob > thresh count as "" predictions: right exactly when they are unanswerable."""
    return {qid: (float(not has_ans[qid]) if na_probs[qid] > thresh else s) for qid, s in scores.items()}


def _summary(exact: Mapping[str, float], f1: Mapping[str, float], qids: Sequence[str] | None = None) -> dict:
    qids = list(exact) if qids is None else list(qids)
    total = len(qids)
    if not total:
        return {"exact": 0.0, "f1": 0.0, "total": 0}
    return {"exact": 100.0 * sum(exact[q] for q in qids) / total,
            "f1": 100.0 * sum(f1[q] for q in qids) / total, "total": total}


def find_best_thresh(preds: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                     has_ans: Mapping[str, bool]) -> tuple[float, float]:
    """(best score 0-100, its threshold): sweep the threshold over the sorted na_probs (official algorithm).

    Start from "every question predicted unanswerable" (score = the unanswerable count); passing each
    question's na_prob switches it to its prediction. One deliberate difference: when "all unanswerable"
    stays best, the threshold returned is just below the smallest na_prob, one that reproduces that score,
    where the official script reports 0.0.
    """
    cur = best = sum(1 for q in scores if not has_ans[q])
    finite = [na_probs[q] for q in scores if np.isfinite(na_probs[q])]
    best_thresh = float(np.nextafter(min(finite), -np.inf)) if finite else 0.0
    for qid in sorted(scores, key=lambda q: na_probs[q]):
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds.get(qid) else 0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / max(len(scores), 1), float(best_thresh)


def squad_evaluate(gold: Mapping[str, Sequence[str]], preds: Mapping[str, str], version: int = 1,
                   na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict:
    """The official scores of `preds` (question id -> text) against `gold` (id -> gold answer texts).

    v2.0 (`version=2`): an empty gold list marks an unanswerable question; the result adds HasAns_* /
    NoAns_* and, when `na_probs` (id -> no-answer score) is given, applies `na_prob_thresh` and adds the
    best-threshold search. Pass the best NON-NULL answer of each question as `preds` with the null-score
    differences as `na_probs` to get both the thresholded scores and a meaningful threshold search.
    """
    if version not in (1, 2):
        raise ValueError(f"SQuAD version must be 1 or 2, got {version!r}")
    exact_raw, f1_raw = raw_scores(gold, preds, version)
    if version == 1:
        return _summary(exact_raw, f1_raw)
    has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    probs = {qid: float(na_probs[qid]) if na_probs is not None and qid in na_probs else 0.0 for qid in gold}
    exact = apply_no_ans_threshold(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = apply_no_ans_threshold(f1_raw, probs, has_ans, na_prob_thresh)
    out = _summary(exact, f1)
    for name, want in (("HasAns", True), ("NoAns", False)):
        qids = [q for q in gold if has_ans[q] == want]
        if qids:
            out.update({f"{name}_{k}": v for k, v in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(preds, exact_raw, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(preds, f1_raw, probs, has_ans)
    return out


# -------------------------------------------------------------------------------------------- postprocess

def postprocess(examples: Sequence, feature_example: Sequence[int], offsets: Sequence, start_logits: Sequence,
                end_logits: Sequence, *, version: int = 1, cls_index: Sequence[int] | None = None,
                n_best: int = 20, max_answer_len: int = 30, null_threshold: float = 0.0
                ) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """Answers from per-feature logits: (predictions, best non-null answers, null-score differences).

    `examples[i]` has ``.id`` and ``.context``; feature j belongs to example ``feature_example[j]``, its
    ``offsets[j]`` is an (n_tokens, 2) array of character spans in the context with -1 (or None) for tokens
    outside it (question, special tokens, padding), and `start_logits[j]` / `end_logits[j]` its logits.
    `cls_index[j]` is the token whose start+end logits are the null score (default 0). v1.1 predictions
    are the best span; v2.0 predicts "" when ``null - best_non_null > null_threshold``. The third dict is
    ``null - best_non_null`` per question (+inf when no span is valid), for the threshold search.
    """
    by_example: dict[int, list[int]] = collections.defaultdict(list)
    for j, i in enumerate(feature_example):
        by_example[int(i)].append(j)
    preds: dict[str, str] = {}
    best_texts: dict[str, str] = {}
    null_odds: dict[str, float] = {}
    for i, ex in enumerate(examples):
        best_score, best_span = -np.inf, None
        null_score = np.inf
        for j in by_example.get(i, []):
            start = np.asarray(start_logits[j], dtype=np.float64)
            end = np.asarray(end_logits[j], dtype=np.float64)
            span = _offsets_array(offsets[j])
            n = min(len(start), len(end), len(span))
            cls = int(cls_index[j]) if cls_index is not None else 0
            if cls < n:
                null_score = min(null_score, start[cls] + end[cls])
            valid = span[:n, 0] >= 0
            starts = np.argsort(start[:n])[::-1][:n_best]
            ends = np.argsort(end[:n])[::-1][:n_best]
            for s in starts:
                if not valid[s]:
                    continue
                for e in ends:
                    if not valid[e] or e < s or e - s + 1 > max_answer_len:
                        continue
                    score = start[s] + end[e]
                    if score > best_score:
                        best_score, best_span = score, (int(span[s, 0]), int(span[e, 1]))
        text = ex.context[best_span[0]:best_span[1]] if best_span else ""
        best_texts[ex.id] = text
        diff = float(null_score - best_score) if np.isfinite(null_score) else -np.inf
        if best_span is None:
            diff = np.inf
        null_odds[ex.id] = diff
        preds[ex.id] = "" if version == 2 and diff > null_threshold else text
    return preds, best_texts, null_odds


def _offsets_array(offsets) -> np.ndarray:
    if isinstance(offsets, np.ndarray):
        return offsets
    return np.asarray([(-1, -1) if o is None else tuple(o) for o in offsets], dtype=np.int64).reshape(-1, 2)
