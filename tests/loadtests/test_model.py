"""Pure unit tests: load profiles and shapes, arrival processes, plan round trip."""

import math

import pytest

from loadtests.arrivals import arrival_times
from loadtests.plan import LoadConfig, Plan, default_target
from loadtests.profile import Profile, Stage, parse_shape, parse_stages, shape_stages
from probes.spec import Scenario


def test_constant_profile_integral_and_inverse():
    p = Profile.constant(10.0, 20.0)
    assert p.total == pytest.approx(200.0)
    assert p.cumulative(5.0) == pytest.approx(50.0)
    assert p.time_at(50.0) == pytest.approx(5.0)
    assert p.time_at(200.0) is None


def test_ramp_profile_inverse_matches_integral():
    p = Profile([Stage(10.0, 20.0), Stage(10.0, 20.0), Stage(5.0, 0.0)])
    assert p.total == pytest.approx(100 + 200 + 50)
    for c in (0.1, 3.0, 99.0, 150.0, 320.0, 349.0):
        t = p.time_at(c)
        assert p.cumulative(t) == pytest.approx(c, rel=1e-9, abs=1e-9)
    assert p.level(5.0) == pytest.approx(10.0)
    assert p.peak == 20.0


def test_zero_length_stage_is_a_jump():
    p = Profile(parse_stages("0s:2,10s:2,0s:8,10s:8"))
    assert p.level(9.99) == pytest.approx(2.0)
    assert p.level(10.0) == pytest.approx(8.0)
    assert p.total == pytest.approx(100.0)


@pytest.mark.parametrize("name", ["ramp", "step", "spike", "soak"])
def test_shapes_last_the_duration_and_peak_at_level(name):
    p = Profile(shape_stages(name, 12.0, 60.0))
    assert p.duration_s == pytest.approx(60.0)
    assert p.peak == pytest.approx(12.0)


def test_shape_parameters():
    name, params = parse_shape("spike:at=10s,length=5s,base=0.5")
    p = Profile(shape_stages(name, 10.0, 30.0, params))
    assert p.level(9.0) == pytest.approx(5.0)
    assert p.level(12.0) == pytest.approx(10.0)
    assert p.level(16.0) == pytest.approx(5.0)
    steps = Profile(shape_stages("step", 8.0, 40.0, {"steps": "4"}))
    assert [steps.level(t) for t in (1, 11, 21, 31)] == pytest.approx([2, 4, 6, 8])
    with pytest.raises(ValueError, match="unknown parameter"):
        shape_stages("ramp", 1, 10, {"bogus": "1"})
    with pytest.raises(ValueError, match="expected one of"):
        parse_shape("wave")
    with pytest.raises(ValueError):
        parse_stages("10s")


def test_constant_arrivals_are_evenly_spaced_and_exact():
    times = list(arrival_times(Profile.constant(10.0, 20.0)))
    assert len(times) == 200
    gaps = {round(b - a, 9) for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {0.1}


def test_worker_shares_union_is_the_global_stream():
    prof = Profile(shape_stages("ramp", 30.0, 20.0))
    whole = list(arrival_times(prof))
    parts = [list(arrival_times(prof, index=i, count=3)) for i in range(3)]
    assert sorted(t for p in parts for t in p) == pytest.approx(whole)
    assert abs(len(parts[0]) - len(parts[2])) <= 1


def test_poisson_count_and_gaps():
    prof = Profile.constant(50.0, 100.0)
    times = list(arrival_times(prof, "poisson", seed=7))
    # 5000 expected; Poisson sd ~71, so 4 sd is 283
    assert abs(len(times) - 5000) < 283
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    mean = sum(gaps) / len(gaps)
    cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert 0.9 < cv < 1.1  # exponential gaps have CV 1; constant would be 0
    split = [list(arrival_times(prof, "poisson", index=i, count=2, seed=7)) for i in range(2)]
    assert abs(sum(map(len, split)) - 5000) < 400


def test_slots_sized_with_headroom_and_plan_round_trip():
    lc = LoadConfig(rate=10.0, duration_s=20.0, thresholds=["ttfa_ms.p95<800"])
    sc = Scenario(turns=1, utterance_s=1.0, trailing_silence_s=0.5, pause_s=0.0)
    est = lc.session_estimate_s(sc)
    assert lc.slot_count(sc) >= 10.0 * est * 1.5
    assert LoadConfig(users=7).slot_count(sc) == 7
    plan = Plan(default_target(), sc, lc, sinks=[{"api": "v1", "url": "http://127.0.0.1:1",
                                                   "database": "x"}])
    back = Plan.from_json(plan.to_json())
    assert back == plan
    assert back.sink_configs()[0].database == "x"
