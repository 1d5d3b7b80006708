"""The WebRTC transport (target key `transport: webrtc`): OpenAI Realtime GA and GPT-Live over
aiortc, behind the engine's transport seam (probes/transport.py).

`connect_webrtc()` offers, signals (probes/webrtc_signalling.py: Realtime `/v1/realtime/calls`,
GPT-Live `/v1/live/sessions`, Azure's paths), and waits for ICE, DTLS and the `oai-events` data
channel; it returns an `RtcTransport` with the interface the engine uses of a WebSocket:
`open_ns`, `send()` (one JSON event on the data channel), `close()`, and every data-channel
message to `on_frame(data, t_ns)` stamped on arrival, `on_close(code, reason)` once. Audio is
the transport's own business (probes/rtc_media.py): `speak()` puts an utterance's pre-encoded
Opus packets on the caller's paced track, and what arrives over RTP reaches `on_media(events,
t_ns)` as the dialect's normalised events, stamped on packet arrival before the jitter buffer.

Everything aiortc runs on the process's one event loop in a native thread (probes/rtc_loop.py);
the blocking side only waits for results through the bridge there, so the engine stays plain
blocking code under OS threads and under gevent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from time import perf_counter_ns
from urllib.parse import urlsplit

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from probes import rtc_loop
from probes import webrtc_signalling as sig
from probes.dialects.base import Interrupted
from probes.outcomes import CONFIG, DC_CLOSED, DTLS_FAILED, ICE_FAILED, Failure
from probes.rtc_media import FRAME_NS, CallerTrack, Playout, RtpListener, encoded, hook_receiver
from probes.transport import Closed

_LOG = logging.getLogger("probes.rtc")
_NS = 1_000_000_000
#: how long close() waits for the peer connection to shut down (and a Realtime hang-up)
CLOSE_TIMEOUT_S = 2.0
#: the largest HTTP answer read while signalling
MAX_ANSWER_BYTES = 1 << 20
_REPLY_ENDS = ("output_audio_buffer.stopped", "output_audio_buffer.cleared")
_CANCELLED = b'"cancelled"'
_INTERRUPTED = Interrupted()


def _event_type(data: bytes) -> str | None:
    import orjson

    try:
        m = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # the dialect reports it
    return m.get("type") if isinstance(m, dict) else None


def configure_messages(dialect) -> list[bytes]:
    """What the engine sends to configure the session over the data channel: Realtime a
    session.update without the PCM formats (the codec is the SDP's); GPT-Live nothing (the
    offer carried the session, and `session.start` is WebSocket-only, gpt-live.md §12)."""
    if getattr(dialect, "continuous_output", False):
        return []
    import orjson

    return [orjson.dumps({"type": "session.update",
                          "session": sig._webrtc_session(dialect.session_config())})]


class RtcTransport:
    """One open WebRTC session (all its aiortc objects live on the loop thread)."""

    def __init__(self, dialect, api_key, *, ca_file, on_frame, on_close, on_media, on_audio,
                 quiet_ms: float) -> None:
        self.dialect = dialect
        self.api_key = api_key
        self.ca_file = ca_file
        self.live = bool(getattr(dialect, "continuous_output", False))
        self.on_frame, self.on_close, self.on_media = on_frame, on_close, on_media
        self.on_audio = on_audio
        self.inbox = rtc_loop.Inbox()
        self.open_ns = 0
        self.answered = False  # the provider answered the offer (GPT-Live bills from here)
        self.call_id: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.dc = None
        self.track = CallerTrack()
        fmt = dialect.output_format
        self.listener = RtpListener(self._media, self._audio,
                                    mode="quiet" if self.live else "marked",
                                    delta_bytes=fmt.bytes_per_s * 20 // 1000, quiet_ms=quiet_ms)
        self.playout = Playout(self.listener)
        self.dc_started: list[int] = []  # arrivals of output_audio_buffer.started
        self.failure_class: str | None = None  # ice_failed when the media path died mid-call
        self._closed_sent = False
        self._closing = False
        self._tasks: list[asyncio.Task] = []

    # ---- loop side ----------------------------------------------------------------------

    def _media(self, events, t: int) -> None:
        self.inbox.put(self.on_media, events, t)

    def _audio(self, stamps: list[int]) -> None:
        self.inbox.put(self.on_audio, stamps, self.listener.delta.nbytes)

    def _message(self, m) -> None:
        t = perf_counter_ns()
        data = m.encode() if isinstance(m, str) else m
        if not self.live and len(data) < 4096:  # Realtime's buffer events end a marked reply
            if b"output_audio_buffer." in data or (b"response.done" in data
                                                    and _CANCELLED in data):
                kind = _event_type(data)
                if kind in _REPLY_ENDS or (kind == "response.done" and _CANCELLED in data):
                    self.listener.reply_ended()
                if kind == "output_audio_buffer.cleared":  # the server cut the playing audio
                    self._media((_INTERRUPTED,), t)
                elif kind == "output_audio_buffer.started":
                    self.dc_started.append(t)
        self.inbox.put(self.on_frame, data, t)

    def _dc_closed(self) -> None:
        if not self._closing and self.failure_class is None:
            self.failure_class = DC_CLOSED  # the peer closed the events channel mid-call
        self._gone("the data channel closed")

    def _gone(self, reason: str) -> None:
        if not self._closed_sent:
            self._closed_sent = True
            self.inbox.put(self.on_close, 1006, reason)

    async def connect(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = self.dialect.connect_request(self.api_key).url
        host = urlsplit(url).hostname
        with rtc_loop.loopback_only(rtc_loop.is_loopback(host)):
            pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(self.track)
            dc = self.dc = pc.createDataChannel("oai-events")
            opened = asyncio.get_running_loop().create_future()

            @dc.on("open")
            def _open() -> None:
                if not opened.done():
                    opened.set_result(perf_counter_ns())

            dc.on("message", self._message)
            dc.on("close", self._dc_closed)

            @pc.on("connectionstatechange")
            async def _state() -> None:
                if pc.connectionState == "failed":
                    if not opened.done():
                        opened.set_exception(ConnectionError("ICE/DTLS failed"))
                    elif self.failure_class is None:
                        self.failure_class = ICE_FAILED
                    self._gone("the WebRTC connection failed")
                elif pc.connectionState == "closed":
                    self._gone("the WebRTC connection closed")

            for tr in pc.getTransceivers():
                if tr.kind == "audio":
                    hook_receiver(tr.receiver, self.listener, self.playout)
            await pc.setLocalDescription(await pc.createOffer())
            answer = await self._signal(pc.localDescription.sdp, deadline)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
            try:
                self.open_ns = await asyncio.wait_for(opened, max(0.0, deadline - time.monotonic()))
            except (TimeoutError, ConnectionError) as e:
                ice = pc.iceConnectionState
                how = "failed" if isinstance(e, ConnectionError) else (
                    f"did not come up within {timeout_s:g} s")
                if ice in ("connected", "completed"):
                    raise Failure(DTLS_FAILED, f"ICE connected but DTLS / the data channel {how}"
                                  ) from None
                raise Failure(ICE_FAILED, f"ICE {how} (ICE state {ice})") from None

    async def _signal(self, offer_sdp: str, deadline: float) -> sig.Answer:
        if self.live:
            req = sig.live_offer(self.dialect, self.api_key, offer_sdp)
        else:
            req = sig.realtime_offer(self.dialect, self.api_key, offer_sdp)
        left = max(0.001, deadline - time.monotonic())
        ssl_ctx = None
        if req.url.startswith("https://") and self.ca_file:
            import ssl

            try:
                ssl_ctx = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as e:
                raise Failure(CONFIG, f"cannot load ca_file {self.ca_file}: {e}") from None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=left)) as http:
                async with http.post(req.url, data=req.body, headers=list(req.headers),
                                     ssl=ssl_ctx if ssl_ctx is not None else True) as r:
                    body = await r.content.read(MAX_ANSWER_BYTES)
                    status, headers = r.status, r.headers
        except aiohttp.ClientSSLError as e:
            raise Failure("tls", f"TLS with the signalling server failed: {e}") from None
        except aiohttp.ClientConnectorDNSError as e:
            raise Failure("dns", f"cannot resolve the signalling host: {e}") from None
        except aiohttp.ClientConnectorError as e:
            raise Failure("connect_refused", f"signalling connection failed: {e}") from None
        except TimeoutError:
            raise Failure("timeout:connect", "the offer was not answered in time") from None
        except (aiohttp.ClientError, OSError) as e:
            raise Failure(sig.classify_exception(e), f"signalling failed: {e}") from None
        parse = sig.parse_live_answer if self.live else sig.parse_realtime_answer
        try:
            answer = parse(status, headers, body)
        except sig.SignallingError as e:
            raise Failure(e.outcome, e.message) from None
        self.answered = True
        self.call_id = answer.call_id
        return answer

    async def _send(self, text: str) -> None:
        self.dc.send(text)

    async def shutdown(self) -> None:
        self._closing = True  # what closes from here on is our own hang-up
        for t in self._tasks:
            t.cancel()
        if not self.live and self.call_id and self.answered:
            try:  # best effort: the provider ends the call at once instead of on timeout
                req = sig.realtime_hangup(self.dialect, self.api_key, self.call_id)
                async with aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=CLOSE_TIMEOUT_S / 2)) as http:
                    async with http.post(req.url, headers=list(req.headers)) as r:
                        await r.read()
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
        self.listener.flush()
        if self.pc is not None:
            self.track.stop()
            await self.pc.close()
        self._gone("closed by us")

    # ---- blocking side --------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        dc = self.dc
        if dc is None or dc.readyState != "open" or self._closed_sent:
            raise Closed()
        rtc_loop.loop().call_soon_threadsafe(_dc_send, dc, data.decode())

    def speak(self, utt, t0_ns: int, lags: list[int] | None):
        """Schedule `utt` on the caller's track from the first 20 ms slot due at or after t0;
        returns the scheduled item (its start slot, and what the sender records)."""
        return self.track.schedule(encoded(utt), t0_ns, lags)

    def slot_ns(self, k: int) -> int:
        return self.track.slot_ns(k)

    def rtp_snapshot(self):
        return self.listener.stats.snapshot()

    def close(self) -> None:
        try:
            rtc_loop.call(self.shutdown(), CLOSE_TIMEOUT_S * 2)
        except Exception:  # gone already, or the loop is stuck: nothing left to measure
            pass
        self.inbox.close()


def _dc_send(dc, text: str) -> None:
    if dc.readyState == "open":
        try:
            dc.send(text)
        except Exception:  # closed meanwhile: the close callback reports it
            pass


def connect_webrtc(dialect, api_key, *, ca_file, timeout_s: float, on_frame, on_close,
                   on_media, on_audio, quiet_ms: float) -> RtcTransport:
    """Open a WebRTC session for `dialect` within `timeout_s`; raises Failure with the stable
    error class of what went wrong (connect_refused, dns, tls, http_<status>, protocol,
    timeout:connect, ice_failed, dtls_failed, config)."""
    tr = RtcTransport(dialect, api_key, ca_file=ca_file, on_frame=on_frame, on_close=on_close,
                      on_media=on_media, on_audio=on_audio, quiet_ms=quiet_ms)
    try:
        rtc_loop.call(tr.connect(timeout_s), timeout_s + 1.0)
    except Exception as e:
        tr.close()
        if isinstance(e, Failure):
            f = e
        elif isinstance(e, TimeoutError):
            f = Failure(ICE_FAILED, f"the WebRTC session was not up within {timeout_s:g} s")
        else:
            f = Failure(sig.classify_exception(e, "ice"), f"{type(e).__name__}: {e}")
        f.answered = tr.answered  # the provider took the offer (GPT-Live bills from there)
        raise f from None
    return tr


__all__ = ["FRAME_NS", "RtcTransport", "configure_messages", "connect_webrtc"]
