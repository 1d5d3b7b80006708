"""The simulator's provider limits (max_sessions, rate_limit_rps) and TTFA growing with load, as
units: profiles parse and validate them, the limiter counts admissions, the bucket refills."""

import pytest

from simulator.limits import Limits, load_ttfa_ms
from simulator.profiles import ProfileBook, ProfileError


def book(body: dict) -> ProfileBook:
    b = ProfileBook()
    b.load_doc({"profiles": {"m": {"inherit": "sim-fast", **body}}})
    return b


class Conn:
    state = None  # an open connection (websockets' State.CLOSED is pruned)


def test_profiles_parse_and_check_the_new_keys():
    p = book({"max_sessions": 40, "rate_limit_rps": 2.5, "ttfa_per_session_ms": 30,
              "ttfa_free_sessions": 5}).for_model("m")
    assert (p.max_sessions, p.rate_limit_rps, p.ttfa_per_session_ms, p.ttfa_free_sessions) == \
        (40, 2.5, 30.0, 5)
    assert ProfileBook().for_model("sim-fast").max_sessions is None  # no limit by default
    for bad in ({"max_sessions": -1}, {"rate_limit_rps": 0}, {"ttfa_per_session_ms": -5},
                {"max_sessions": 2.5}):
        with pytest.raises(ProfileError):
            book(bad)


def test_max_sessions_counts_admitted_but_not_yet_started_sessions():
    p = book({"max_sessions": 3}).for_model("m")
    lim = Limits()
    conns = [Conn() for _ in range(4)]
    assert [lim.admit(p, c, active=0) for c in conns] == [None, None, None, 429]
    for c in conns[:3]:
        lim.started(c)  # now the server's active count carries them
    assert lim.admit(p, Conn(), active=3) == 429
    assert lim.admit(p, Conn(), active=2) is None  # one ended


def test_rate_limit_is_a_token_bucket():
    now = [100.0]
    p = book({"rate_limit_rps": 2}).for_model("m")
    lim = Limits(clock=lambda: now[0])
    got = [lim.admit(p, Conn(), 0) for _ in range(3)]
    assert got == [None, None, 429]  # one second's worth saved
    now[0] += 0.5  # refills 1 token
    assert lim.admit(p, Conn(), 0) is None and lim.admit(p, Conn(), 0) == 429


def test_ttfa_grows_with_active_sessions_past_the_free_ones():
    p = book({"ttfa_per_session_ms": 30, "ttfa_free_sessions": 5}).for_model("m")
    assert [load_ttfa_ms(p, n) for n in (0, 5, 6, 15)] == [0.0, 0.0, 30.0, 300.0]
