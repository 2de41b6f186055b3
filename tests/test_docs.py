"""The docs a reader meets: results on one screen with the run-by-run notebook under docs/lab/, links that resolve,
and no internal issue numbers."""

from __future__ import annotations

import re

from conftest import REPO

DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
ISSUE = re.compile(r"\bissues? ?#?\d+|(?<![\w&/])#\d+\b", re.I)


def test_relative_links_resolve():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            path = target.split("#", 1)[0]
            if path and "://" not in path and not path.startswith("mailto:"):
                if not (doc.parent / path).exists():
                    broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken


def test_no_internal_issue_numbers():
    hits = [f"{doc.relative_to(REPO)}:{n}: {line.strip()}" for doc in DOCS
            for n, line in enumerate(doc.read_text().splitlines(), 1) if ISSUE.search(line)]
    assert not hits


def test_results_fit_one_screen_and_point_to_the_notebook():
    results = (REPO / "docs" / "results.md").read_text()
    assert len(results.splitlines()) <= 45
    assert "(lab/runs.md)" in results and (REPO / "docs" / "lab" / "runs.md").is_file()
    for task in ("STS-B", "CoLA", "MRPC"):
        row = next(line for line in results.splitlines() if line.startswith("|") and f"| {task}," in line)
        assert re.search(r"\*\*(met|missed)\*\*", row), row  # each task's row says whether its target is met
    assert "docs/results.md" in (REPO / "README.md").read_text()
