"""Drives voicepulse.progress like `voicepulse load` would: a fake 3-second run with figures that
change every 0.1 s. Run by test_progress.py under tmux (a real pseudo-terminal) and through a pipe."""

import sys
import time

from voicepulse.progress import Progress

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
p = Progress(total_s=steps * 0.1, interval_s=0.1, log_interval_s=0.5)
for i in range(1, steps + 1):
    p.update(active_sessions=i % 7, sessions=i, arrivals_per_s=4.0, arrivals_due=i,
             arrivals_started=i, late_starts=0, ttfa_p50_ms=300 + i, ttfa_p95_ms=500 + i,
             error_rate=0.01 if i > steps // 2 else 0.0, errors=1 if i > steps // 2 else 0,
             send_lag_p99_ms=80.0 if i > steps - 5 else 2.0, cpu_pct=40.0)
    time.sleep(0.1)
p.close()
print(f"END {steps}", flush=True)
