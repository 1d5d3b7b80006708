"""Run one probe session in this process and print what it cost, as one JSON line.

    python -m tests.hostile.session_mem URL [first_audio_s response_done_s]

Used by the resource-bound tests and README.md ("Operating VoicePulse"): the peak RSS growth of a process that
runs exactly one session against URL (a hostile server or the simulator), and how much really
arrived (`rx_bytes` read from sockets, the reply `audio_s`): a bound on memory says nothing if
the flood never came in.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import time

from probes.session import run_session
from probes.spec import Scenario, Target, Timeouts

RX = [0]  # bytes this process read from sockets


def _count_reads() -> None:
    """Count every byte read through socket.socket: recv() and recvmsg() (the engine's
    kernel-stamping socket reads with recvmsg, a plain one with recv)."""
    base = socket.socket

    def recv(self, *a, **kw):
        data = super(base, self).recv(*a, **kw)
        RX[0] += len(data)
        return data

    def recvmsg(self, *a, **kw):
        out = super(base, self).recvmsg(*a, **kw)
        RX[0] += len(out[0])
        return out

    base.recv, base.recvmsg = recv, recvmsg


def main() -> None:
    _count_reads()
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
    rx0 = RX[0]
    t0 = time.monotonic()
    r = run_session(t, sc, api_key="x")
    elapsed = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    transcript = sum(len(x.transcript) for x in r.turns)
    print(json.dumps({"outcome": r.outcome, "error": r.error, "elapsed_s": elapsed,
                      "rss_before_kb": before, "rss_peak_kb": peak,
                      "rss_growth_mb": (peak - before) / 1024, "transcript_chars": transcript,
                      "rx_bytes": RX[0] - rx0, "audio_s": sum(x.audio_s for x in r.turns)}))


if __name__ == "__main__":
    main()
