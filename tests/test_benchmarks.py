"""The benchmark scripts run end to end (CI's smoke version: one small model, few runs).

This checks that the scripts work and that the builds they time compute onnxruntime's outputs,
not how fast anything is: timings on shared machines do not belong in tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fp32_benchmark_smoke_runs_untuned_and_tuned():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "fp32_vs_onnxruntime.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    claims = [line for line in proc.stdout.splitlines() if line.startswith("claim:")]
    assert len(claims) == 2 and "untuned" in claims[0] and "tuned, 10 trials" in claims[1], proc.stdout
    for claim in claims:
        difference = float(re.search(r"max relative output difference ([0-9.e+-]+)", claim).group(1))
        assert difference <= 1e-4, claim
    assert "| digits_cnn | 1 |" in proc.stdout
