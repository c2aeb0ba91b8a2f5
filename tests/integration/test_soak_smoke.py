"""
A short run of the soak (bench/soak.py), so that the script cannot rot: 50 sessions of the
whole mix (WebSocket, xvpvnc, serial writer and watchers), with churn, for 15 seconds, against
the real service in its own process. The long run (1,000 sessions, 10 minutes) is in docs/performance.md.
"""

import json
import subprocess
import sys

from bench.service import REPO


def test_short_soak_passes_with_every_session_accounted_for(tmp_path):
    """Fifty sessions with traffic and churn for 15 s: the soak passes, every kind of session
    carried echoed traffic, sessions churned, and the service's counters agree with the
    client's."""
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--sessions", "50", "--duration", "15",
         "--interval", "1", "--churn", "0.2", "--churn-period", "4", "--seed", "7",
         "--json", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    tally = result["tally"]
    assert result["failures"] == []
    assert tally["open_at_end"] == 50 and tally["closed_clean_at_end"] == 50
    assert tally["churns"] >= 5
    assert tally["opened"] == 50 + tally["churns"]
    assert tally["messages"] >= 300 and tally["watcher_lines"] >= 10
    assert tally["server_open"] == {"vnc": 45, "serial": 5}
    assert tally["server_consumed"] == tally["opened_by_type"]
    assert len(result["samples"]) >= 15
