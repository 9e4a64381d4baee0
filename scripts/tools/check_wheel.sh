#!/usr/bin/env bash
# Builds the langdml wheel and checks that it works OUTSIDE this checkout:
#   1. builds dist/langdml-*.whl (pip wheel --no-deps) and checks it holds the configs and LICENSE;
#   2. creates a fresh venv in an empty temporary folder and installs the wheel with --no-deps;
#   3. from an empty working folder runs `langdml configs` and
#      `langdml train emoji_demo train.epochs=1 data.dataset=imagefolder:<tiny folder>` and checks
#      that it trains, that the installed (not the checkout's) package ran, and that the cache went
#      to the platform cache dir (and to $LANGDML_CACHE when set), never into the working folder.
#
# The fresh venv REUSES the heavy dependencies (torch, timm, transformers, faiss, the asset
# packages, ...) of an existing environment instead of installing them: a fresh torch install is
# about 5.5 GB. It does so with a .pth file in the new venv's site-packages naming that
# environment's site-packages, which Python appends to sys.path AFTER the venv's own; .pth files
# inside the reused folder (such as the checkout's editable-install hook) are not processed, so
# `import langdml` finds the installed wheel. Dependencies therefore come from the reused
# environment, not from the wheel's metadata; this checks packaging (configs, cache location,
# entry point), not dependency resolution.
#
# Usage: bash scripts/tools/check_wheel.sh   (PYTHON=... picks the environment to reuse; default .venv;
#                                       KEEP_WORK=1 keeps the temporary folder)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"

echo "== building the wheel"
mkdir -p dist
[ -f dist/.gitignore ] || echo '*' > dist/.gitignore   # build output, never committed
rm -rf build dist/langdml-*.whl                          # no stale files from an earlier build
if ! "$PY" -m pip wheel -q --no-deps -w dist . ; then
    echo "isolated build failed (no index?); retrying with the environment's setuptools"
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w dist .
fi
WHEEL="$(ls "$ROOT"/dist/langdml-*.whl)"
echo "$WHEEL"
"$PY" - "$WHEEL" <<'EOF'
import sys
import zipfile

names = zipfile.ZipFile(sys.argv[1]).namelist()
for needed in ("langdml/configs/emoji_demo.yaml", "langdml/configs/emoji_ablation.yaml"):
    assert needed in names, f"wheel lacks {needed}"
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "wheel lacks LICENSE"
meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(sys.argv[1]).read(meta).decode()
assert "License-Expression: MIT" in text, "METADATA lacks License-Expression: MIT"
print(f"wheel holds {sum(n.startswith('langdml/configs/') for n in names)} configs and LICENSE")
EOF

WORK="$(mktemp -d "${TMPDIR:-/tmp}/langdml-wheel.XXXXXX")"
if [ "${KEEP_WORK:-0}" = 1 ]; then echo "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$WORK/empty" "$WORK/home" "$WORK/xdg"

echo "== fresh venv in $WORK/venv (heavy dependencies reused from $PY's environment)"
"$PY" -m venv --without-pip "$WORK/venv"
VPY="$WORK/venv/bin/python"
# Install the wheel before the .pth exists, so pip sees no other langdml to replace.
"$PY" -m pip --python "$VPY" install -q --no-deps "$WHEEL"
REUSED="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
OWN="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$REUSED" > "$OWN/zz_reuse_heavy_dependencies.pth"

# A tiny imagefolder (no fonts needed): 12 classes (colour x shape), 4 jittered images each.
"$VPY" - "$WORK/data" <<'EOF'
import sys
from pathlib import Path

from PIL import Image, ImageDraw

colours = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "gold": (230, 180, 20)}
for cname, rgb in colours.items():
    for shape in ("circle", "square", "triangle"):
        folder = Path(sys.argv[1]) / f"{cname}_{shape}"
        folder.mkdir(parents=True)
        for i in range(4):
            img = Image.new("RGB", (64, 64), "white")
            d, o = ImageDraw.Draw(img), 4 * i
            box = (8 + o, 8 + o, 44 + o, 44 + o)
            if shape == "circle":
                d.ellipse(box, fill=rgb)
            elif shape == "square":
                d.rectangle(box, fill=rgb)
            else:
                d.polygon([(26 + o, 8 + o), (8 + o, 44 + o), (44 + o, 44 + o)], fill=rgb)
            img.save(folder / f"{i}.png")
EOF

cd "$WORK/empty"
# A clean user environment: no $LANGDML_CACHE, a throwaway home and XDG cache dir, no hub.
run() {
    env -u LANGDML_CACHE -u PYTHONPATH HOME="$WORK/home" XDG_CACHE_HOME="$WORK/xdg" \
        HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$@"
}

echo "== which langdml, which cache"
run "$VPY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import langdml
from langdml.io import cache_root, source_checkout, user_cache_dir

work = Path(sys.argv[1]).resolve()
where = Path(langdml.__file__).resolve()
assert where.is_relative_to(work / "venv"), f"imported the wrong langdml: {where}"
assert source_checkout() is None, "an installed wheel must not look like a source checkout"
assert cache_root() == user_cache_dir(), (cache_root(), user_cache_dir())
assert cache_root().resolve().is_relative_to(work), cache_root()
print(f"langdml from {where.parent}; cache {cache_root()}")
EOF
run env LANGDML_CACHE="$WORK/envcache" "$VPY" -c \
    'import sys; from langdml.io import cache_root; assert str(cache_root()) == sys.argv[1], cache_root()' \
    "$WORK/envcache"
echo "\$LANGDML_CACHE wins: ok"

echo "== langdml configs"
run "$WORK/venv/bin/langdml" configs | tee "$WORK/configs.txt"
grep -q "emoji_demo" "$WORK/configs.txt"
grep -q "emoji_ablation" "$WORK/configs.txt"

echo "== the pinned emoji class list ships with the wheel"
run "$VPY" -c 'from langdml.data.emoji import pinned_classes; assert len(pinned_classes()) > 1000'
echo "pinned class list: ok"

echo "== langdml train emoji_demo (1 epoch on the tiny imagefolder)"
run "$WORK/venv/bin/langdml" train emoji_demo train.epochs=1 "data.dataset=imagefolder:$WORK/data" \
    train.batch_size=12 train.m_per_class=2 train.progress=false | tee "$WORK/train.json"
"$VPY" - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
out = json.loads((work / "train.json").read_text())
run_dir = work / "empty" / out["run_dir"]
assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoint.pt").is_file(), run_dir
assert (run_dir / "provenance.json").is_file(), run_dir
assert "recall@1" in out["final"], out["final"]
cwd_entries = sorted(p.name for p in (work / "empty").iterdir())
assert cwd_entries == ["runs"], f"the working folder got {cwd_entries}, expected only runs/"
features = work / "xdg" / "langdml" / "features"
assert features.is_dir() and any(features.rglob("*")), f"no feature cache under {features}"
print(f"trained: R@1 {out['final']['recall@1']:.3f}; cache in {features.parent}, not in the cwd")
EOF
echo "wheel OK: $WHEEL"
