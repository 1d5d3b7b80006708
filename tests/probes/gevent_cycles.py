"""N greenlet sessions in a gevent-monkey-patched process, the cyclic collector off: print how
many sessions/transports are still alive after they ended and what gc.collect() then found of
ours. Used by tests/probes/test_no_cycles.py (monkey-patching must precede every import).
usage: python gevent_cycles.py WS_URL N
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import weakref  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import probes.session as session_mod  # noqa: E402
from probes.spec import Scenario, Target  # noqa: E402

refs: list[weakref.ref] = []


class Watched(session_mod.Session):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        refs.append(weakref.ref(self))

    def _connect(self, start: int) -> None:
        super()._connect(start)
        refs.append(weakref.ref(self._ws))
        refs.append(weakref.ref(self._ws._proto))


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2])
    tg = Target("sim", url, "sim-fast")
    sc = Scenario(turns=1, utterance_s=0.3, trailing_silence_s=0.3, pause_s=0.05)
    session_mod.run_session(tg, sc, api_key="x")  # warm
    session_mod.Session = Watched
    gc.collect()
    gc.disable()
    jobs = [gevent.spawn(session_mod.run_session, tg, sc, api_key="x") for _ in range(n)]
    gevent.joinall(jobs, timeout=40)
    outcomes = [j.value.outcome if j.value is not None else repr(j.exception) for j in jobs]
    del jobs
    gevent.sleep(0.05)  # let the receive greenlets' last switch out finish
    alive = sum(r() is not None for r in refs)
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    garbage = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                      if type(o).__module__.startswith(("probes", "websockets"))})
    print(json.dumps({"patched": monkey.is_module_patched("threading"), "outcomes": outcomes,
                      "alive": alive, "refs": len(refs), "garbage": garbage}))


if __name__ == "__main__":
    main()
