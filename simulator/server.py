"""The simulator's WebSocket server: routing, auth and upgrade-time faults, then one session per
connection. Endpoints (OpenAI Realtime shapes):

- `/v1/realtime?model=M`                      OpenAI (GA; beta with `OpenAI-Beta: realtime=v1`)
- `/openai/v1/realtime?model=DEPLOYMENT`      Azure GA v1
- `/openai/realtime?deployment=D&api-version=V`  Azure preview (beta shape)
- `/ws/google.ai.generativelanguage.{v1,v1beta,v1alpha}.GenerativeService.BidiGenerateContent`
  (and `...Constrained`; leading slashes collapsed) and the Vertex
  `/ws/google.cloud.aiplatform.{v1,v1beta1}.LlmBidiService/BidiGenerateContent`: Gemini Live
  (gemini_session.py), key by `?key=` / `?access_token=` or `x-goog-api-key` /
  `Authorization: Bearer|Token`.
- `/v1/live/sessions`, Azure `/openai/v1/live/sessions`: GPT-Live (live_session.py), key by
  `Authorization: Bearer` or `api-key`, refused with an `error` after the upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .channel import MAX_MESSAGE
from .faults import SESSION_KINDS, TURN_KINDS, UPGRADE_KINDS
from .gemini_session import GeminiConnInfo, GeminiSession
from .gemini_wire import PATH_RE as GEMINI_PATH_RE
from .live_session import LiveSession, live_admit
from .live_wire import PATHS as LIVE_PATHS
from .openai_session import ConnInfo, OpenAISession
from .state import SimState
from .truth import SessionTruth
from .util import abort_rst

log = logging.getLogger("simulator")

_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}
_ERR = {400: ("invalid_request_error", "invalid_request"),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "forbidden"),
        404: ("invalid_request_error", "not_found"),
        429: ("requests", "rate_limit_exceeded"),
        500: ("server_error", "server_error"), 502: ("server_error", "bad_gateway"),
        503: ("server_error", "service_unavailable"), 504: ("server_error", "timeout")}


def json_response(status: int, body: dict, extra: dict | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = "application/json"
    data = orjson.dumps(body)
    headers["Content-Length"] = str(len(data))
    headers["Connection"] = "close"
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status, _REASONS.get(status, "Error"), headers, data)


def error_response(status: int, message: str, extra: dict | None = None) -> Response:
    etype, code = _ERR.get(status, ("server_error", "error"))
    return json_response(status, {"error": {"type": etype, "code": code, "message": message,
                                            "param": None}}, extra)


def client_key(request: Request) -> str | None:
    """The API key from `Authorization: Bearer`, `api-key`, or a browser subprotocol."""
    auth = request.headers.get("Authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    key = request.headers.get("api-key")
    if key:
        return key.strip() or None
    for proto in request.headers.get_all("Sec-WebSocket-Protocol"):
        for p in proto.split(","):
            p = p.strip()
            if p.startswith("openai-insecure-api-key."):
                return p[len("openai-insecure-api-key."):] or None
    return None


def route(path: str) -> tuple[str | None, bool | None, str]:
    """(model, forced_beta, error) for a request path with query."""
    parts = urlsplit(path)
    p = "/" + parts.path.lstrip("/")
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if p in ("/v1/realtime", "/openai/v1/realtime"):
        model = q.get("model")
        return (model, None, "") if model else (None, None, "missing model query parameter")
    if p == "/openai/realtime":
        model = q.get("deployment")
        if not model:
            return None, None, "missing deployment query parameter"
        if not q.get("api-version"):
            return None, None, "missing api-version query parameter"
        return model, True, ""
    return None, None, "not found"


def gemini_route(path: str) -> str | None:
    """The API version of a Gemini Live path (leading slashes collapsed), else None."""
    p = urlsplit("/" + path.lstrip("/")).path  # `//ws/...` would otherwise parse as a host
    m = GEMINI_PATH_RE.match(p)
    return None if m is None else (m.group(1) or m.group(3))


def gemini_key(request: Request) -> str | None:
    q = {k: v[0] for k, v in parse_qs(urlsplit("/" + request.path.lstrip("/")).query).items()}
    for k in ("key", "access_token"):
        if q.get(k):
            return q[k]
    key = request.headers.get("x-goog-api-key")
    if key and key.strip():
        return key.strip()
    auth = request.headers.get("Authorization") or ""
    for scheme in ("bearer ", "token "):
        if auth.lower().startswith(scheme):
            return auth[len(scheme):].strip() or None
    return None


def gemini_error(status: int, message: str, extra: dict | None = None) -> Response:
    status_name = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                   404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                   503: "UNAVAILABLE"}.get(status, "UNKNOWN")
    return json_response(status, {"error": {"code": status, "message": message,
                                            "status": status_name}}, extra)


class SimServer:
    def __init__(self, state: SimState):
        self.state = state

    async def admit(self, connection: ServerConnection, profile, faults: list, truth: SessionTruth,
                    key: str | None, check_key: bool = True) -> str | None:
        """The upgrade-time faults and the key check, for every protocol: the connect delay (plus
        slow_handshake), then refuse (a TCP reset), an injected HTTP status, a missing or unknown
        key. None to upgrade; else "refused", the status ("503") or "key", with the outcome
        recorded as truth."""
        st = self.state
        delay_ms = profile.connect_delay_ms.sample(st.rng)
        delay_ms += sum(float(f.params["delay_ms"]) for f in faults if f.kind == "slow_handshake")
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        refusal = None
        if any(f.kind == "refuse" for f in faults):
            truth.outcome = refusal = "refused"
        elif statuses := [int(f.params["status"]) for f in faults if f.kind == "http_status"]:
            refusal = str(statuses[0])
            truth.outcome = f"http_{refusal}"
        elif check_key and (key is None or (st.options.api_keys and key not in st.options.api_keys)):
            truth.outcome, refusal = "http_401", "key"
        elif (limited := st.limits.admit(profile, connection, st.active_sessions)) is not None:
            truth.outcome, refusal = f"http_{limited}", str(limited)  # a provider limit
        if refusal is not None:
            st.truth.session(truth)
        if refusal == "refused":
            abort_rst(connection)
        return refusal

    def modelless_upgrade(self, connection: ServerConnection, request: Request, api: str,
                          t0: int) -> tuple:
        """The start of an upgrade whose model is known only later (Gemini's setup message,
        GPT-Live's session.start): the default profile and its upgrade-time faults, recorded in
        a fresh truth. Returns (profile, path, truth, faults)."""
        profile = self.state.profiles.for_model(None)
        path = urlsplit("/" + request.path.lstrip("/")).path
        truth = SessionTruth(None, "", path, api, t0)
        connection.sim_info = None
        faults = self.state.faults.pick(profile, "", UPGRADE_KINDS)
        truth.faults = [f.record() for f in faults]
        return profile, path, truth, faults

    async def gemini_request(self, connection: ServerConnection, request: Request, version: str,
                             t0: int):
        """Upgrade of a Gemini Live path: upgrade-time faults and the key; the model (and so
        the profile and the session's faults) is only known from the setup message."""
        profile, path, truth, faults = self.modelless_upgrade(connection, request, "gemini", t0)
        key = gemini_key(request)
        refusal = await self.admit(connection, profile, faults, truth, key)
        if refusal == "refused":
            return gemini_error(503, "refused")
        if refusal == "key":
            return gemini_error(401, "API key not valid. Please pass a valid API key."
                                if key else "Method doesn't allow unregistered callers. Please "
                                "use an API key.")
        if refusal is not None:
            status = int(refusal)
            return gemini_error(status, "The service is currently unavailable.",
                                {"Retry-After": "1"} if status in (429, 503) else None)
        connection.sim_info = GeminiConnInfo(path, version, profile, truth)
        connection.sim_shape = "gemini"
        return None

    async def process_request(self, connection: ServerConnection, request: Request):
        st = self.state
        t0 = time.monotonic_ns()
        version = gemini_route(request.path)
        if version is not None:
            return await self.gemini_request(connection, request, version, t0)
        if urlsplit("/" + request.path.lstrip("/")).path.rstrip("/") in LIVE_PATHS:  # GPT-Live
            return await live_admit(self, connection, request, client_key(request), t0)
        model, forced_beta, err = route(request.path)
        if model is None:
            status = 404 if err == "not found" else 400
            return error_response(status, f"Invalid URL: {err}.")
        beta_header = "realtime=v1" in (request.headers.get("OpenAI-Beta") or "")
        shape = "beta" if (forced_beta or beta_header) else "ga"
        if beta_header and not forced_beta and st.options.beta == "retired":
            shape = "retired"
        profile = st.profiles.for_model(model)
        truth = SessionTruth(None, model, urlsplit(request.path).path, shape, t0)
        connection.sim_info = None
        key = client_key(request)
        faults = st.faults.pick(profile, model, UPGRADE_KINDS + SESSION_KINDS)
        faults += st.faults.pick(profile, model, TURN_KINDS, per="session")
        truth.faults = [f.record() for f in faults if f.kind in UPGRADE_KINDS + SESSION_KINDS]
        refusal = await self.admit(connection, profile, faults, truth, key)
        if refusal == "refused":
            return error_response(503, "refused")  # never written: the socket is gone
        if refusal == "key":
            msg = ("You didn't provide an API key. You need to provide your API key in an "
                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                   if key is None else "Incorrect API key provided.")
            return error_response(401, msg)
        if refusal is not None:
            status = int(refusal)
            extra = {"Retry-After": "1"} if status in (429, 503) else None
            msg = {401: "Incorrect API key provided.",
                   429: "Rate limit reached for requests. Please try again in 1s."}.get(
                status, "The server is temporarily unable to handle the request.")
            return error_response(status, msg, extra)
        connection.sim_info = ConnInfo(model, truth.path, shape == "ga", profile, truth,
                                       [f for f in faults if f.kind not in UPGRADE_KINDS])
        connection.sim_shape = shape
        return None

    async def handler(self, ws: ServerConnection) -> None:
        info: ConnInfo | None = getattr(ws, "sim_info", None)
        if info is None:
            return
        st = self.state
        st.limits.started(ws)
        st.active_sessions += 1
        st.total_sessions += 1
        try:
            if ws.sim_shape == "retired":
                info.truth.outcome = "beta_retired"
                await ws.send(orjson.dumps({"type": "error", "event_id": "event_beta_retired",
                                            "error": {"type": "invalid_request_error",
                                                      "code": "beta_api_shape_disabled",
                                                      "message": "The Realtime Beta API is no "
                                                      "longer supported. Please use /v1/realtime "
                                                      "for the GA API.", "param": None,
                                                      "event_id": None}}), text=True)
                await ws.close(4000, "invalid_request_error.beta_api_shape_disabled")
                info.truth.close_code = 4000
                return
            if ws.sim_shape == "gemini":
                await GeminiSession(st, ws, info).run()
            elif ws.sim_shape == "live":
                await LiveSession(st, ws, info).run()
            else:
                await OpenAISession(st, ws, info).run()
        except Exception:
            log.exception("simulator: session crashed")
        finally:
            st.active_sessions -= 1
            if info.truth.closed_ns is None:
                info.truth.closed_ns = time.monotonic_ns()
            st.truth.session(info.truth)


def ws_serve(sim: SimServer, host: str, port: int, ssl=None):
    """The websockets server (an async context manager); `ssl` (a server SSLContext) for wss."""
    return serve(sim.handler, host, port, process_request=sim.process_request, ssl=ssl,
                 compression=None, max_size=MAX_MESSAGE, max_queue=64, ping_interval=None,
                 close_timeout=2, subprotocols=["realtime"],
                 select_subprotocol=_select_subprotocol, logger=logging.getLogger("simulator.ws"))


def _select_subprotocol(connection, subprotocols):
    return "realtime" if "realtime" in subprotocols else None
