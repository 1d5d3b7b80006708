"""The client's loopback-only ICE (probes/rtc_loop.loopback_only) composes with another
restriction in the same process: inside a block it gathers on 127.0.0.1 only, outside it defers
to whatever aioice did before, even one installed after our wrappers. Before, the first block
left its own wrappers falling back to aioice's original, which undid a test peer's restriction
(simulator.webrtc.loopback) for the rest of the process: its peers gathered on the machine's
real interfaces."""

from __future__ import annotations

import aioice

from probes import rtc_loop


def _hosts() -> list[str]:
    return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)


def test_outside_a_block_another_restriction_still_holds(monkeypatch):
    monkeypatch.setattr(rtc_loop, "_prev", dict(rtc_loop._prev))  # restored after the test
    # someone else's restriction, installed before and after our wrappers went in
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["10.9.9.9"])
    with rtc_loop.loopback_only(True):
        assert _hosts() == ["127.0.0.1"]
    assert _hosts() == ["10.9.9.9"]
    with rtc_loop.loopback_only(False):  # a non-loopback target: not ours to restrict
        assert _hosts() == ["10.9.9.9"]
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["10.8.8.8"]  # replaced ours
    with rtc_loop.loopback_only(True):
        assert _hosts() == ["127.0.0.1"]
    assert _hosts() == ["10.8.8.8"]
