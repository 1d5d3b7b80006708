"""WebRTC signalling for OpenAI Realtime and GPT-Live, sans-I/O: build the HTTP request that carries
the SDP offer, parse the answer, name the failure.

Realtime GA: `POST /v1/realtime/calls`, multipart with the `sdp` and `session` parts -> `201`, the
SDP answer as the body and the call id in `Location`; hang up with `POST .../calls/{id}/hangup`.
GPT-Live: `POST /v1/live/sessions` JSON `{session, transport: {type: webrtc, sdp}}` -> `201`
`{session: {id}, transport: {sdp}}`. URL and auth come from the WebSocket dialects
(`connect_request`), so Azure's paths and `api-key` auth follow the same rules here
(gpt-live.md §12). Nothing here opens a socket: the transport does, and uses `classify_exception`
for what went wrong on the way.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import orjson

from probes.outcomes import DTLS_FAILED, ICE_FAILED

#: stable error classes of the signalling step (docs/metrics.md "Outcome")
CONNECT_REFUSED = "connect_refused"
CONNECT_TIMEOUT = "connect_timeout"
PROTOCOL = "protocol"

_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One signalling request. Headers may hold the key: never log them."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """The SDP answer and the id the provider gave the call (for hang-up and the sideband)."""

    sdp: str
    call_id: str | None


class SignallingError(Exception):
    """The offer was not answered: `outcome` is a stable error class (`http_<status>`,
    `protocol`); `message` is for people (no secrets: the body is cut short)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(outcome, message)
        self.outcome, self.message = outcome, message


def _http_url(ws_url: str, path: str) -> str:
    p = urlsplit(ws_url)
    scheme = _SCHEME.get(p.scheme)
    if scheme is None:
        raise ValueError(f"not a ws(s):// or http(s):// URL: {p.scheme}://")
    return urlunsplit((scheme, p.netloc, path, "", ""))


def _api_version(ws_url: str) -> str:
    """Azure's `api-version`, kept when the target URL carries one (the preview endpoints)."""
    for part in urlsplit(ws_url).query.split("&"):
        if part.startswith("api-version="):
            return part
    return ""


def _webrtc_session(session: dict) -> dict:
    """The WebSocket session config minus the PCM formats: over WebRTC the codec is the SDP's."""
    out = dict(session)
    out.pop("input_audio_format", None)
    out.pop("output_audio_format", None)
    audio = out.get("audio")
    if isinstance(audio, dict):
        audio = dict(audio)
        audio.pop("format", None)  # GPT-Live: "omitting audio.format" (gpt-live.md §12)
        for side in ("input", "output"):
            if isinstance(audio.get(side), dict):
                audio[side] = {k: v for k, v in audio[side].items() if k != "format"}
        out["audio"] = audio
    return out


# ---- OpenAI Realtime --------------------------------------------------------------------------


def realtime_calls_url(ws_url: str) -> str:
    """`.../v1/realtime?model=M` (or Azure's `/openai/v1/realtime`) -> `.../realtime/calls`."""
    path = urlsplit(ws_url).path.rstrip("/")
    if path in ("", "/openai"):
        path += "/v1/realtime"
    elif not path.endswith("/realtime"):
        path += "/realtime"
    url = _http_url(ws_url, path + "/calls")
    q = _api_version(ws_url)
    return f"{url}?{q}" if q else url


def realtime_offer(dialect, api_key: str | None, offer_sdp: str,
                   boundary: str | None = None) -> HttpRequest:
    """The offer for `dialect` (an OpenAIRealtimeDialect): multipart `sdp` + `session` parts,
    with the dialect's auth headers (never its OpenAI-Beta header: WebRTC is GA only)."""
    conn = dialect.connect_request(api_key)
    session = _webrtc_session(dialect.session_config())
    session.setdefault("type", "realtime")
    session["model"] = dialect.model
    boundary = boundary or "vp" + secrets.token_hex(12)
    parts = [("sdp", "application/sdp", offer_sdp.encode()),
             ("session", "application/json", orjson.dumps(session))]
    body = b"".join(
        b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\nContent-Type: %s\r\n\r\n%s\r\n"
        % (boundary.encode(), name.encode(), ctype.encode(), data)
        for name, ctype, data in parts) + b"--%s--\r\n" % boundary.encode()
    headers = tuple(h for h in conn.headers if h[0].lower() != "openai-beta") + (
        ("Content-Type", f"multipart/form-data; boundary={boundary}"),
        ("Accept", "application/sdp"))
    return HttpRequest("POST", realtime_calls_url(conn.url), headers, body)


def _header(headers, name: str) -> str | None:
    items = headers.items() if hasattr(headers, "items") else headers
    for k, v in items:
        if k.lower() == name:
            return v
    return None


def _check_status(status: int, body: bytes) -> None:
    if status != 201 and not 200 <= status < 300:
        detail = body[:200].decode("utf-8", "replace")
        raise SignallingError(f"http_{status}", f"offer answered {status}: {detail}")


def _check_sdp(sdp: str) -> str:
    if not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise SignallingError(PROTOCOL, "the answer is not an SDP description")
    return sdp


def parse_realtime_answer(status: int, headers, body: bytes) -> Answer:
    """A `201` with the SDP answer as the body; the call id is the last segment of `Location`."""
    _check_status(status, body)
    sdp = _check_sdp(body.decode("utf-8", "replace"))
    loc = _header(headers, "location")
    call_id = urlsplit(loc).path.rstrip("/").rsplit("/", 1)[-1] if loc else None
    return Answer(sdp, call_id or None)


def realtime_hangup(dialect, api_key: str | None, call_id: str) -> HttpRequest:
    """`POST .../realtime/calls/{id}/hangup` with the offer's auth."""
    conn = dialect.connect_request(api_key)
    base, _, query = realtime_calls_url(conn.url).partition("?")
    url = f"{base}/{call_id}/hangup" + (f"?{query}" if query else "")
    headers = tuple(h for h in conn.headers if h[0].lower() != "openai-beta")
    return HttpRequest("POST", url, headers, b"")


# ---- GPT-Live ---------------------------------------------------------------------------------


def live_offer(dialect, api_key: str | None, offer_sdp: str) -> HttpRequest:
    """The offer for `dialect` (a GptLiveDialect): JSON `{session, transport}` on the dialect's
    URL (`/v1/live/sessions`, Azure `/openai/v1/live/sessions`) and auth."""
    conn = dialect.connect_request(api_key)
    body = orjson.dumps({"session": _webrtc_session(dialect.session_config()),
                         "transport": {"type": "webrtc", "sdp": offer_sdp}})
    p = urlsplit(conn.url)
    url = _http_url(conn.url, p.path) + (f"?{p.query}" if p.query else "")
    return HttpRequest("POST", url, conn.headers + (("Content-Type", "application/json"),), body)


def parse_live_answer(status: int, headers, body: bytes) -> Answer:
    """A `201` JSON body `{session: {id}, transport: {sdp}}`."""
    _check_status(status, body)
    try:
        doc = orjson.loads(body)
        sdp = doc["transport"]["sdp"]
        sid = (doc.get("session") or {}).get("id")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SignallingError(PROTOCOL, "the answer is not {session, transport: {sdp}}") from None
    if not isinstance(sdp, str):
        raise SignallingError(PROTOCOL, "transport.sdp is not a string")
    return Answer(_check_sdp(sdp), sid if isinstance(sid, str) else None)


# ---- failures ---------------------------------------------------------------------------------


def classify_exception(exc: BaseException, phase: str = "signalling") -> str:
    """The stable class of an exception raised while signalling or connecting the media:
    refused and timeouts by type; ICE and DTLS failures when the transport raised them with
    those classes' names in the message (aiortc's own exceptions carry no better type)."""
    if isinstance(exc, SignallingError):
        return exc.outcome
    if isinstance(exc, ConnectionRefusedError):
        return CONNECT_REFUSED
    if isinstance(exc, TimeoutError):
        return {"ice": ICE_FAILED, "dtls": DTLS_FAILED}.get(phase, CONNECT_TIMEOUT)
    text = str(exc).lower()
    if phase == "dtls" or "dtls" in text:
        return DTLS_FAILED
    if phase == "ice" or re.search(r"\bice\b", text):
        return ICE_FAILED
    return PROTOCOL
