"""The built site as a reader sees it: the result tables fit a laptop screen.

Headless Chromium opens the built pages at 1366 x 900 px (a common laptop screen) and
reports, from the rendered layout, every table wider than its box (a horizontal scroll
bar: columns off-screen) and every name in a table broken over two lines. Skipped
where Chromium or MkDocs is not installed (`.ci/run` installs Chromium).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import ROOT, docs_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = ("leaderboard", "results/families")  # generated pages of wide tables
WIDTH, HEIGHT = 1366, 900
PROBE = """
<script>
window.addEventListener("load", () => {
  const problems = [];
  const tables = document.querySelectorAll(".md-typeset table");
  tables.forEach((table, i) => {
    for (let box = table; box && !box.classList.contains("md-typeset"); box = box.parentElement)
      if (box.scrollWidth > box.clientWidth + 1)
        problems.push(`table ${i + 1} needs ${box.scrollWidth} px, has ${box.clientWidth} px`);
    if (table.getBoundingClientRect().right > window.innerWidth)
      problems.push(`table ${i + 1} ends past the screen's right edge`);
    table.querySelectorAll("code").forEach((code) => {
      if (code.getClientRects().length > 1)
        problems.push(`table ${i + 1}: ${code.textContent} breaks over two lines`);
    });
  });
  document.body.setAttribute("data-layout", JSON.stringify(
    {tables: tables.length, width: window.innerWidth, problems}));
});
</script>
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("MkDocs is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(out)], cwd=ROOT,
                          env=docs_env(out / "cache"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def layout(page: Path, profile: Path) -> dict:
    """What the probe measured on `page`, rendered by headless Chromium."""
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
         "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'data-layout="([^"]*)"', proc.stdout)
    assert match, f"the probe did not run:\n{proc.stderr[-2000:]}"
    return json.loads(match[1].replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.parametrize("page", PAGES)
def test_result_tables_fit_a_laptop_screen(page, site, tmp_path):
    measured = layout(site / page / "index.html", tmp_path / "profile")
    assert measured["width"] == WIDTH
    assert measured["tables"] >= 2
    assert measured["problems"] == [], "\n".join(measured["problems"])
