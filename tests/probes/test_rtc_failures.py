"""The WebRTC transport's failures end the session with their stable error classes (probes/rtc.py):
a refused signalling connection, an HTTP error answer, a malformed answer, and an answer whose
peer never completes ICE (ice_failed within the connect timeout). A small aiohttp signalling
server on loopback stands in for the provider; its answering peer is aiortc's."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from probes import prices
from probes.session import run_session
from probes.spec import Scenario, Target, Timeouts

SC = Scenario(turns=1, timeouts=Timeouts(connect=3.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Signalling:
    """POST /v1/realtime/calls answered as `mode` says; runs its own loop in a thread."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = _free_port()
        self.loop = asyncio.new_event_loop()
        self.peers: list[RTCPeerConnection] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _call(self, request: web.Request) -> web.Response:
        if self.mode == "401":
            return web.json_response({"error": {"code": "invalid_api_key"}}, status=401)
        if self.mode == "garbage":
            return web.Response(status=201, text="not an sdp", content_type="application/sdp")
        offer = None
        if request.path.endswith("/live/sessions"):
            offer = (await request.json())["transport"]["sdp"]
        else:
            async for part in await request.multipart():
                if part.name == "sdp":
                    offer = (await part.read()).decode()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        await pc.close()  # its candidates now answer no connectivity check: ICE cannot connect
        if request.path.endswith("/live/sessions"):
            return web.json_response({"session": {"id": "sess_x"},
                                      "transport": {"type": "webrtc", "sdp": answer}},
                                     status=201)
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": "/v1/realtime/calls/rtc_x"})

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/realtime/calls", self._call)
        app.router.add_post("/v1/live/sessions", self._call)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> Signalling:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def target(self) -> Target:
        return Target("rtc", f"ws://127.0.0.1:{self.port}/v1/realtime", "m", transport="webrtc")


def test_refused_signalling_is_connect_refused():
    res = run_session(Target("rtc", f"ws://127.0.0.1:{_free_port()}/v1/realtime", "m",
                             transport="webrtc"), SC, api_key="k")
    assert res.outcome == "connect_refused" and res.transport == "webrtc", res.error


@pytest.mark.parametrize(("mode", "outcome"), [("401", "http_401"), ("garbage", "protocol")])
def test_bad_answers_have_their_class(mode, outcome):
    with Signalling(mode) as sig:
        res = run_session(sig.target(), SC, api_key="sk-test-key")
    assert res.outcome == outcome, (res.outcome, res.error)
    assert "sk-test-key" not in res.error


def test_an_answer_that_never_connects_is_ice_failed_within_the_connect_timeout():
    with Signalling("dead") as sig:
        t0 = time.monotonic()
        res = run_session(sig.target(), SC, api_key="k")
        took = time.monotonic() - t0
    assert res.outcome == "ice_failed", (res.outcome, res.error)
    assert took < SC.timeouts.connect + 2.5, took  # connect timeout + a bounded close
    assert res.cost_usd is None and res.turns == []


def test_a_gpt_live_session_answered_but_never_started_costs_the_15_s_setup_charge():
    with Signalling("dead") as sig:
        target = Target("live", f"http://127.0.0.1:{sig.port}/v1/live/sessions", "gpt-live-1",
                        provider="openai-live", transport="webrtc", delegation="client")
        res = run_session(target, SC, api_key="k")
    assert res.outcome == "ice_failed", (res.outcome, res.error)
    assert res.cost_usd == pytest.approx(prices.webrtc_setup_cost_usd("gpt-live-1"))
    assert prices.webrtc_setup_cost_usd("gpt-live-1") == pytest.approx(15 * 0.05 / 60)
    assert prices.webrtc_setup_cost_usd("gpt-realtime") is None  # billed by the token


def test_a_gpt_live_offer_refused_costs_nothing():
    target = Target("live", f"http://127.0.0.1:{_free_port()}/v1/live/sessions", "gpt-live-1",
                    provider="openai-live", transport="webrtc", delegation="client")
    res = run_session(target, SC, api_key="k")
    assert res.outcome == "connect_refused" and not res.cost_usd
