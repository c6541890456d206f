"""The SDK installs without torch: a fresh virtual environment gets `pip install ./sdk`
(the README's command) and talks to a real server: a forecast and an image."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from serving import ServerThread

from mmntp.generation import Pipeline

ROOT = Path(__file__).resolve().parents[1]

CLIENT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    import numpy as np
    from mmntp.client import Client, ImageChunk, ImageOutput, SamplingParams

    for heavy in ("torch", "diffusers"):
        assert importlib.util.find_spec(heavy) is None, heavy + " is in the SDK environment"
    try:
        import mmntp.generation  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("the SDK must not ship the model code")

    with Client(sys.argv[1], timeout=120) as client:
        values = 10 + np.sin(np.arange(96) * 2 * np.pi / 12)
        fc = client.forecast(values, horizon=6, num_samples=8, seed=0)
        assert fc.median.shape == (6,) and set(fc.quantiles) >= {0.1, 0.9}
        assert np.all(fc.quantiles[0.1] <= fc.quantiles[0.9])
        chunks = list(client.generate("a red circle on a blue background",
                                      ImageOutput(), SamplingParams(seed=0)))
        final = [c for c in chunks if isinstance(c, ImageChunk) and c.final]
        assert len(final) == 1 and final[0].png.startswith(b"\\x89PNG")
        assert final[0].image().shape == (32, 32, 3)
    print("sdk ok")
    """
)


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("sdk-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The README's command, run from the repository root.
    subprocess.run([*install, "./sdk"], check=True, cwd=ROOT, timeout=600)
    return python


def test_sdk_installs_without_torch_and_talks_to_a_server(sdk_python, tmp_path):
    pipe = Pipeline.from_pretrained(ROOT / "services" / "default")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    with ServerThread(pipe) as server:
        done = subprocess.run(
            [str(sdk_python), "-c", CLIENT_SCRIPT, server.target],
            cwd=tmp_path,  # not the checkout: the SDK must come from the venv
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sdk ok" in done.stdout
