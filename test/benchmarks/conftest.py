import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_quick():
    r"""Runs :obj:`benchmarks/<name>.py --quick` on one thread; returns the
    lines it printed (and fails the test if it failed)."""
    def run(name: str) -> List[str]:
        out = subprocess.run(
            [sys.executable, str(ROOT / 'benchmarks' / f'{name}.py'),
             '--quick'], capture_output=True, text=True, timeout=300,
            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()
    return run
