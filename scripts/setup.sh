#!/usr/bin/env bash
# One-command set-up on a fresh machine: install mmntp (CPU torch first, so nothing pulls
# a CUDA build), then run the main job on the bundled default service: a 24-step
# probabilistic forecast of a real series, written to out/forecast.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Debian packages: espeak-ng speaks the speech the audio tokenizers and tests use; g++
# builds the kernels torch.compile makes for the engine's compile_decode; chromium runs the
# web playground's browser tests (tests/browser/, driven by Playwright).
MISSING=""
command -v espeak-ng >/dev/null 2>&1 || MISSING="$MISSING espeak-ng"
command -v g++ >/dev/null 2>&1 || MISSING="$MISSING g++"
command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium"
if [ -n "$MISSING" ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $MISSING >/dev/null
fi

# The local CPU build; an unpinned torch would download a multi-GB CUDA build instead.
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev]"

mkdir -p out
"$PY" -m mmntp.cli --version
"$PY" -m mmntp.cli generate --modality timeseries --context examples/elec_equip.csv \
    --horizon 24 --num-samples 20 --seed 0 -o out/forecast.csv
head -n 5 out/forecast.csv
