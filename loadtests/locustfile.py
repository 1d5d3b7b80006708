"""VoicePulse voice sessions for Locust.

    locust -f loadtests/locustfile.py                       # web UI on :8089
    locust -f loadtests/locustfile.py --headless --vp-rate 5 --vp-duration 30
    locust -f loadtests/locustfile.py --headless --processes 4 --vp-rate 50
    locust -f loadtests/locustfile.py --master ...  /  --worker --master-host H

`voicepulse load` passes the whole run as --vp-plan JSON; see README.md ("Load testing").
"""

import os
import sys

try:
    import loadtests  # noqa: F401
except ImportError:  # run from a checkout: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loadtests.locust_plugin import VoiceSessionUser, VoiceShape  # noqa: E402

__all__ = ["VoiceSessionUser", "VoiceShape"]
