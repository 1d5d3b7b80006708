"""Keep every aiortc peer of this process on one address (loopback unless told otherwise).

aiortc asks a public STUN server when a peer has no RTCConfiguration, and aioice gathers host
candidates on every interface but loopback (`aioice.ice.get_host_addresses`). Here the candidates
are the one address given, peers are built with no ICE servers, and remote candidates on any
other address are dropped before a connectivity check could be sent to them (that also keeps
mDNS `.local` candidates from starting a multicast query). Call `restrict()` before any peer is
created; it is idempotent.
"""

from __future__ import annotations

import ipaddress
import logging

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection

log = logging.getLogger("simulator.webrtc")
_state = {"address": None}
_orig_add_remote = aioice.ice.Connection.add_remote_candidate


def restrict(address: str = "127.0.0.1") -> None:
    """Gather host candidates on `address` only and accept remote candidates on it only."""
    ipaddress.IPv4Address(address)  # an IPv4 literal, never a name to resolve
    _state["address"] = address
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.Connection.add_remote_candidate = _add_remote_candidate


def restricted_to() -> str | None:
    return _state["address"]


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [_state["address"]]


async def _add_remote_candidate(self, remote_candidate) -> None:
    if remote_candidate is not None and remote_candidate.host != _state["address"]:
        log.info("webrtc: remote candidate on %s ignored (ICE is restricted to %s)",
                 remote_candidate.host, _state["address"])
        return
    await _orig_add_remote(self, remote_candidate)


def peer() -> RTCPeerConnection:
    """A peer with no STUN/TURN servers, under the restriction (which must be in place)."""
    if _state["address"] is None:
        raise RuntimeError("loopback.restrict() must run before a peer is created")
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def candidate_hosts(sdp: str) -> list[str]:
    """The connection address of every `a=candidate` line of an SDP (for checks and tests)."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            out.append(line.split()[4])
    return out
