"""What the server, the sessions and the control API share: options and run-wide state.

Its own module so that the sessions can name it without importing the server that creates them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from .faults import FaultBoard
from .limits import Limits
from .profiles import ProfileBook
from .truth import Lateness, TruthLog


@dataclass
class SimOptions:
    api_keys: list[str] = field(default_factory=list)  # empty = any non-empty key
    beta: str = "on"  # on | retired
    reader: str = "fast"  # fast (own frame reader after the handshake) | websockets
    seed: int | None = None
    go_away_lead_s: float = 60.0  # Gemini: goAway this long before the connection lifetime ends


class SimState:
    """Everything shared by the sessions and the control API."""

    def __init__(self, profiles: ProfileBook, options: SimOptions, truth: TruthLog):
        self.profiles = profiles
        self.options = options
        self.truth = truth
        self.rng = random.Random(options.seed)
        self.faults = FaultBoard(self.rng)
        self.lateness = Lateness()
        self.started_ns = time.monotonic_ns()
        self.active_sessions = 0
        self.sessions: set = set()  # live sessions (closed on shutdown)
        self.total_sessions = 0
        self.limits = Limits()  # profiles' max_sessions / rate_limit_rps
