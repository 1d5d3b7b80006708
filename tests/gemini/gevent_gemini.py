"""tests/probes/gevent_sessions.py with Gemini targets: N Gemini sessions as greenlets in a
gevent-monkey-patched process (as in a Locust worker); prints the same JSON.
usage: python gevent_gemini.py WS_URL MODEL N TURNS STAGGER_MS
"""

from gevent import monkey

monkey.patch_all()

import functools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from probes.spec import Target  # noqa: E402
from tests.probes import gevent_sessions  # noqa: E402

gevent_sessions.Target = functools.partial(Target, provider="gemini")

if __name__ == "__main__":
    gevent_sessions.main()
