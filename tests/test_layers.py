"""The layering of docs/architecture.md, enforced: import-linter's contracts in
pyproject.toml pass on the package, and fail once an upward import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
]


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [*LINT, "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layers():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def _lint_with_line(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """Lint a copy of the package with `line` appended to `module` (a path in mmntp/)."""
    shutil.copytree(
        ROOT / "mmntp", tmp_path / "mmntp", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "mmntp" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    return _lint(tmp_path)


def test_an_upward_import_breaks_the_contract(tmp_path):
    done = _lint_with_line(tmp_path, "engine/scheduler.py", "from mmntp.generation import Pipeline")
    assert done.returncode != 0
    assert "mmntp.engine is not allowed to import mmntp.generation" in done.stdout


def test_the_api_stays_free_of_torch(tmp_path):
    done = _lint_with_line(tmp_path, "api/limits.py", "import torch")
    assert done.returncode != 0
    assert "mmntp.api is not allowed to import torch" in done.stdout
