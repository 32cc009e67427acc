"""Make a file or folder really read-only for a test, even when the tests run as root.

Root ignores permission bits, so as root the immutable attribute (``chattr
+i``) is used; where neither works the test is skipped with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only(path: Path):
    path = Path(path)
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        os.chmod(path, mode & ~0o222)
        try:
            yield
        finally:
            os.chmod(path, mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without a working 'chattr +i': cannot make a path read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], capture_output=True)
