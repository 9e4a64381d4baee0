"""The built wheel works outside the checkout: scripts/tools/check_wheel.sh builds it, installs it
into a fresh venv in an empty folder (reusing this environment's heavy dependencies through a .pth
file), runs `langdml configs` and `langdml train emoji_demo train.epochs=1` on a tiny imagefolder,
and checks that the cache goes to the platform cache dir, not the working folder (~30 s)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_wheel_installs_and_trains_outside_the_checkout(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("LANGDML_CACHE", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools" / "check_wheel.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "wheel OK" in proc.stdout
    assert "not in the cwd" in proc.stdout
    assert not list(tmp_path.glob("langdml-wheel.*")), "the script must remove its work folder"
