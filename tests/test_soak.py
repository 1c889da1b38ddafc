"""A bounded soak (`make test-soak`, run by CI): 20,000 mixed requests, refusals and hang-ups included,
against `python -m service serve`; resident memory may grow < 5% after the warm-up, and the service must
still be ready at the end (scripts/soak.py does the work and prints the figures)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
@pytest.mark.soak
def test_memory_stays_flat_over_20000_requests(served_models_dir, tmp_path):
    report = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "soak.py"), "--models-dir", str(served_models_dir),
                             "--requests", "20000", "--concurrency", "16", "--sample-every", "2000",
                             "--fail-above-pct", "5", "--json", str(report)],
                            capture_output=True, text=True, timeout=3000)
    print(result.stdout[-3000:])
    summary = json.loads(report.read_text())["summary"]
    assert summary["unexpected"] == 0 and summary["ready_at_the_end"] and summary["server_errors_logged"] == 0
    assert summary["statuses"].get("cancelled", 0) > 100 and summary["statuses"].get("400", 0) > 1000
    assert summary["growth_after_warmup_pct"] < 5
    assert result.returncode == 0, result.stderr[-3000:]
