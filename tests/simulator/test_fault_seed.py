"""A fault's own `seed`: its dice fall the same way every run, whatever else the simulator draws
(latency samples, other faults), so a test with probabilistic faults is reproducible."""

from __future__ import annotations

import random

import pytest

from simulator.faults import Fault, FaultError
from tests.sim_server import SimProcess


def rolls(fault: Fault, shared: random.Random, n: int = 200) -> list[bool]:
    out = []
    for _ in range(n):
        shared.random()  # another consumer of the shared source between two rolls
        out.append(fault.take("m", shared, now_ns=1))
    return out


def test_a_seeded_fault_ignores_the_shared_dice() -> None:
    spec = {"kind": "close_1011", "probability": 0.3, "seed": 21}
    a = rolls(Fault.parse(spec, now_ns=0), random.Random(1))
    b = rolls(Fault.parse(spec, now_ns=0), random.Random(2))
    assert a == b and 30 <= sum(a) <= 90  # same sequence; about 30 % of 200
    other = rolls(Fault.parse({**spec, "seed": 22}, now_ns=0), random.Random(1))
    assert other != a
    unseeded = [rolls(Fault.parse({**spec, "seed": None}, now_ns=0), random.Random(s))
                for s in (1, 2)]
    assert unseeded[0] != unseeded[1]  # without a seed, the shared source decides


@pytest.mark.parametrize("seed", [True, 1.5, "7"])
def test_a_bad_seed_names_the_key(seed) -> None:
    with pytest.raises(FaultError, match=r"fault\.seed: expected an integer"):
        Fault.parse({"kind": "drop", "probability": 0.5, "seed": seed})


def test_the_control_api_takes_and_shows_the_seed() -> None:
    with SimProcess() as sim:
        fid = sim.fault(kind="http_status", status=503, probability=0.5, seed=99)
        faults = sim.request("GET", "/faults")["faults"]
        with pytest.raises(RuntimeError, match=r"HTTP 400.*fault\.seed: expected an integer"):
            sim.fault(kind="drop", probability=0.5, seed="x")
    [f] = [f for f in faults if f["id"] == fid]
    assert f["seed"] == 99 and "rng" not in f
