"""The playground's static files ship in the package and reference only each other.

No browser here (tests/browser/ has the page's behaviour): a wheel built from the project
carries every file of mmntp/serve/playground/, and the page fetches nothing from outside
that folder (no CDN, no external fonts), so it works on a machine with no internet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAYGROUND = ROOT / "mmntp" / "serve" / "playground"
ASSETS = sorted(p.name for p in PLAYGROUND.iterdir() if p.is_file())


def test_the_page_references_only_its_own_files():
    html = (PLAYGROUND / "index.html").read_text()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls, "index.html loads no script or stylesheet"
    for url in urls:
        assert url.startswith("/playground/") and url.removeprefix("/playground/") in ASSETS, url
    for js in PLAYGROUND.glob("*.js"):
        for target in re.findall(r'from "([^"]+)"', js.read_text()):
            assert target.startswith("./") and target[2:] in ASSETS, f"{js.name} imports {target}"
    for path in PLAYGROUND.iterdir():
        assert not re.search(r"https?://", path.read_text()), f"{path.name} reaches outside"


def test_a_wheel_carries_every_playground_file(tmp_path):
    src = tmp_path / "src"  # a copy, so no build/ or egg-info lands in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "mmntp", src / "mmntp", ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-q", "-w", str(tmp_path / "dist")], cwd=src, check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("mmntp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mmntp/serve/playground/{name}" for name in ASSETS} <= names


def test_the_committed_screenshots_stay_small():
    shots = sorted((ROOT / "docs" / "img").glob("playground-*.png"))
    assert shots, "docs/img has no playground screenshot (MMNTP_SCREENSHOTS=docs/img ...)"
    for shot in shots:
        assert shot.stat().st_size < 200_000, f"{shot.name}: {shot.stat().st_size} bytes"
