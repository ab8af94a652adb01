"""Regenerate the web UI's screenshots in docs/images (ui-overview.png, ui-task.png, ui-time-travel.png,
ui-allocation.png): runs the browser test (tests/test_ui_browser.py: a real local cluster, Podman, Debian's
Chromium) with DROVER_UI_SCREENSHOTS pointing here.

    . scripts/env.sh && .venv/bin/python docs/images/make_screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

if __name__ == "__main__":
    env = {**os.environ, "DROVER_UI_SCREENSHOTS": str(HERE),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                              "tests/test_ui_browser.py"], cwd=REPO, env=env))
