"""Run one probe session in this process and print what it cost, as one JSON line.

    python -m tests.hostile.session_mem URL [first_audio_s response_done_s]

Used by the resource-bound tests and README.md ("Operating VoicePulse"): the peak RSS growth of a process that
runs exactly one session against URL (a hostile server or the simulator).
"""

from __future__ import annotations

import json
import resource
import sys
import time

from probes.session import run_session
from probes.spec import Scenario, Target, Timeouts


def main() -> None:
    url = sys.argv[1]
    first_audio = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    done = float(sys.argv[3]) if len(sys.argv) > 3 else 4.0
    t = Target(name="t", url=url, model=sys.argv[4] if len(sys.argv) > 4 else "sim-fast")
    sc = Scenario(turns=1, utterance_s=0.3, trailing_silence_s=0.5,
                  timeouts=Timeouts(connect=3, ready=3, first_audio=first_audio,
                                    response_done=done, session=done + 10))
    # warm up imports, audio rendering and the first connection's code paths
    from probes.session import prepare

    prepare(t, sc)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    r = run_session(t, sc, api_key="x")
    elapsed = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    transcript = sum(len(x.transcript) for x in r.turns)
    print(json.dumps({"outcome": r.outcome, "error": r.error, "elapsed_s": elapsed,
                      "rss_before_kb": before, "rss_peak_kb": peak,
                      "rss_growth_mb": (peak - before) / 1024, "transcript_chars": transcript}))


if __name__ == "__main__":
    main()
