"""The capacity search's decisions (loadtests/capacity.py) on plain data: no Locust, no clock."""

import pytest

from loadtests import capacity as cap


def step(level, ok=True, *, overloaded=False, sessions=100, cost=0.0, errors=None,
         expr="error_rate<0.01", actual=None):
    v = {"expr": expr, "ok": ok, "actual": actual if actual is not None else (0.0 if ok else 0.2)}
    return cap.Step(level=level, sessions=sessions, turns=sessions, verdicts=[v],
                    overloaded=overloaded, health="lag" if overloaded else "ok", cost_usd=cost,
                    errors=errors or ({} if ok else {"http_429": 20}), session_s=2.0)


def drive(cfg, holds, *, max_steps=30, **kw):
    """Run the search against a target whose bounds hold while `holds(level)` says so."""
    steps = []
    for _ in range(max_steps):
        d = cap.next_step(cfg, steps, **kw)
        if d.level is None:
            return cap.result(cfg, steps, d), [s.level for s in steps]
        steps.append(step(d.level, holds(d.level)))
    raise AssertionError("the search did not stop by itself")


@pytest.mark.parametrize("limit", [3.7, 40.0, 41.0, 97.0, 250.0])
def test_open_model_finds_the_limit_within_precision(limit):
    cfg = cap.SearchConfig(start=1.0, factor=2.0, precision=0.10)
    res, levels = drive(cfg, lambda lv: lv <= limit)
    assert res.stop == cap.FOUND and res.found
    bp, bad = res.breaking_point, res.first_bad
    assert bp <= limit < bad
    assert (bad - bp) / bp <= 0.10
    assert levels[:2] == [1.0, 2.0]  # steps up by the factor before it bisects
    assert res.broken_bound["expr"] == "error_rate<0.01" and res.errors_at_break == {"http_429": 20}


def test_closed_model_bisects_on_whole_users_and_names_the_sequence():
    cfg = cap.SearchConfig(start=10, integer=True, factor=2.0, precision=0.10, unit="users")
    res, levels = drive(cfg, lambda lv: lv <= 40)
    assert levels == [10, 20, 40, 80, 60, 50, 45, 42]
    assert res.breaking_point == 40 and res.first_bad == 42
    assert all(float(lv).is_integer() for lv in levels)


def test_whole_users_stop_when_nothing_lies_between():
    cfg = cap.SearchConfig(start=2, integer=True, factor=2.0, precision=0.01, unit="users")
    res, levels = drive(cfg, lambda lv: lv <= 5)
    assert res.breaking_point == 5 and res.first_bad == 6  # 1 % of 5 is below one user


def test_an_overloaded_generator_is_a_floor_not_a_finding():
    cfg = cap.SearchConfig(start=5, integer=True, unit="users")
    steps = [step(5), step(10), step(20, ok=False, overloaded=True)]
    d = cap.next_step(cfg, steps)
    assert d.level is None and d.stop == cap.OVERLOADED
    assert "generator overloaded" in d.message and "floor" in d.message
    res = cap.result(cfg, steps, d)
    assert res.breaking_point is None and res.floor == 10 and not res.found
    assert res.first_bad is None  # the overloaded step's failure is not the target's
    assert "floor: 10 users" in cap.table(res)


def test_a_failing_start_level_stops_without_a_finding():
    cfg = cap.SearchConfig(start=50)
    d = cap.next_step(cfg, [step(50, ok=False)])
    assert d.stop == cap.START_FAILED and "start lower" in d.message


def test_max_level_clamps_the_last_step_then_stops():
    cfg = cap.SearchConfig(start=4, factor=2.0, max_level=12)
    res, levels = drive(cfg, lambda lv: True)
    assert levels == [4, 8, 12]
    assert res.stop == cap.MAX_LEVEL and res.floor == 12 and res.breaking_point is None


def test_max_sessions_stops_before_the_step_that_would_pass_it():
    cfg = cap.SearchConfig(start=2.0, factor=2.0, hold_s=10.0, max_sessions=70)
    steps = [cap.Step(level=2.0, sessions=20, turns=20, verdicts=[], session_s=1.0)]
    d = cap.next_step(cfg, steps)  # next: 4/s for 10 s = 40 more, 60 in all: runs
    assert d.level == 4.0
    steps.append(cap.Step(level=4.0, sessions=40, turns=40, verdicts=[], session_s=1.0))
    d = cap.next_step(cfg, steps)  # 8/s for 10 s = 80 more: over 70
    assert d.level is None and d.stop == cap.BUDGET and "--max-sessions 70" in d.message


def test_max_cost_projects_from_the_cost_per_session_so_far():
    cfg = cap.SearchConfig(start=2.0, factor=2.0, hold_s=10.0, max_cost_usd=1.0)
    steps = [cap.Step(level=2.0, sessions=20, turns=20, verdicts=[], cost_usd=0.2)]
    d = cap.next_step(cfg, steps)  # 0.01/session: 40 more = 0.40, 0.60 in all
    assert d.level == 4.0
    steps.append(cap.Step(level=4.0, sessions=40, turns=40, verdicts=[], cost_usd=0.4))
    d = cap.next_step(cfg, steps)  # 80 more = 0.80, 1.40 in all: over
    assert d.stop == cap.BUDGET and "--max-cost $1" in d.message


def test_hold_gives_at_least_min_turns():
    cfg = cap.SearchConfig(start=1.0, hold_s=10.0, min_turns=30)
    assert cap.hold_for(cfg, 1.0, 1, 2.0) == 30  # 1 session/s, 1 turn each
    assert cap.hold_for(cfg, 1.0, 3, 2.0) == 10
    closed = cap.SearchConfig(start=1, integer=True, hold_s=5.0, min_turns=30)
    assert cap.hold_for(closed, 2, 1, 3.0) == 45  # 2 users, 3 s sessions: 2/3 turns/s


def test_generator_health_counts_late_starts_and_a_short_rate():
    assert cap.generator_health(False, [], 0, 100, 10.0, 10.0) == (False, "ok")
    assert cap.generator_health(False, [], 2, 20, 10.0, 10.0) == (False, "ok")  # 2: too few
    over, why = cap.generator_health(False, [], 6, 100, 10.0, 10.0)
    assert over and "6 of 100 starts late" in why
    assert not cap.generator_health(False, [], 5, 100, 10.0, 10.0)[0]  # 5 % is not over 5 %
    over, why = cap.generator_health(False, [], 0, 100, 8.0, 10.0)
    assert over and "achieved 8.00/s of 10/s" in why
    over, why = cap.generator_health(True, ["event-loop lag p99 80 ms > 10 ms"], 0, 0, None, None)
    assert over and "event-loop lag" in why


def test_config_is_validated():
    with pytest.raises(ValueError, match="step-factor"):
        cap.SearchConfig(start=1, factor=1.0).validate()
    with pytest.raises(ValueError, match="precision"):
        cap.SearchConfig(start=1, precision=0).validate()
    with pytest.raises(ValueError, match="max-level"):
        cap.SearchConfig(start=10, max_level=5).validate()


def test_table_names_the_finding():
    cfg = cap.SearchConfig(start=10, integer=True, unit="users")
    res, _ = drive(cfg, lambda lv: lv <= 40)
    text = cap.table(res)
    assert "breaking point: 40 users" in text
    assert "first bound broken: error_rate<0.01 at 42 users: 0.2" in text
    assert "errors at the break: http_429 20" in text
    d = res.to_dict()
    assert d["breaking_point"] == 40 and len(d["steps"]) == 8 and d["found"] is True
