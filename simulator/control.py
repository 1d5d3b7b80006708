"""The control API: a tiny loopback HTTP/1.1 JSON server on the simulator's event loop.

GET /healthz · GET/PUT /profile · GET/POST /faults · GET/DELETE /truth · GET /stats.
One request per connection (Connection: close) keeps it small; it is a test and rehearsal tool,
not a web server.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

import orjson

from .channel import FRAMES
from .faults import FaultError
from .profiles import ProfileError
from .state import SimState

_MAX_BODY = 1024 * 1024
_STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large"}


class ControlServer:
    def __init__(self, state: SimState):
        self.state = state

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._request(reader), timeout=10)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            status, body = 400, {"error": "bad request"}
        data = orjson.dumps(body)
        head = (f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n").encode()
        try:
            writer.write(head + data)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, dict]:
        line = (await reader.readline()).decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3:
            return 400, {"error": "bad request line"}
        method, target = parts[0].upper(), parts[1]
        length = 0
        while True:
            h = (await reader.readline()).decode("latin-1")
            if h in ("\r\n", "\n", ""):
                break
            name, _, value = h.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > _MAX_BODY:
            return 413, {"error": "body too large"}
        raw = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return 400, {"error": "body is not JSON"}
        return self.dispatch(method, url.path, query, body)

    def dispatch(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        st = self.state
        if path == "/healthz":
            return 200, {"ok": True, "active_sessions": st.active_sessions,
                         "uptime_s": round((time.monotonic_ns() - st.started_ns) / 1e9, 3)}
        if path == "/profile":
            if method == "GET":
                name = query.get("model")
                if name:
                    return 200, st.profiles.for_model(name).to_json()
                return 200, {"profiles": {n: p.to_json() for n, p in st.profiles.profiles.items()}}
            if method == "PUT":
                if not isinstance(body, dict):
                    return 400, {"error": "expected a JSON object"}
                try:
                    names = st.profiles.update(body)
                except ProfileError as e:
                    return 400, {"error": str(e)}
                return 200, {"updated": names,
                             "profiles": {n: st.profiles.profiles[n].to_json() for n in names}}
            return 405, {"error": "use GET or PUT"}
        if path == "/faults":
            if method == "GET":
                return 200, {"faults": [f.to_json() for f in st.faults.posted.values()]}
            if method != "POST":
                return 405, {"error": "use GET or POST"}
            if not isinstance(body, dict):
                return 400, {"error": "expected a JSON object"}
            action = body.get("action", "start")
            if action == "start":
                try:
                    f = st.faults.post(body)
                except FaultError as e:
                    return 400, {"error": str(e)}
                return 200, {"id": f.id, "fault": f.to_json()}
            if action == "stop":
                return (200, {"stopped": body.get("id")}) if st.faults.stop(str(body.get("id"))) \
                    else (404, {"error": f"no fault {body.get('id')!r}"})
            if action == "clear":
                st.faults.clear()
                return 200, {"cleared": True}
            return 400, {"error": "action: expected start, stop or clear"}
        if path == "/truth":
            if method == "DELETE":
                st.truth.clear()
                return 200, {"cleared": True}
            return 200, st.truth.query(query.get("session_id"), query.get("model"))
        if path == "/stats":
            reset = query.get("reset") == "1"
            frames = {"in": FRAMES[0], "out": FRAMES[1]}
            if reset:
                FRAMES[0] = FRAMES[1] = 0
            return 200, {"active_sessions": st.active_sessions,
                         "total_sessions": st.total_sessions,
                         "delta_lateness": st.lateness.summary(reset=reset),
                         "frames": frames}
        return 404, {"error": f"no route {path}"}


async def control_serve(state: SimState, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(ControlServer(state).handle, host, port)
