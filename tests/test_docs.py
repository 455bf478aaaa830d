"""The documentation's links and lists stay true to the tree: a renamed page, a removed heading or a
new config file that the docs do not name fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "docker" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_a_file_and_heading(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: link to {target}: no such heading"


def test_readme_stays_a_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 120


def test_configs_page_names_every_config():
    text = (REPO / "docs" / "configs.md").read_text()
    for group in ("model", "model/base", "roi_layer", "dataset", "solver", "experiment", "study", "hydra/launcher"):
        for config in sorted((REPO / "configs" / group).glob("*.yaml")):
            assert f"`{config.stem}`" in text, f"docs/configs.md does not name {group}/{config.name}"
