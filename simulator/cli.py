"""`voicepulse sim` / `python -m simulator`: run the reference realtime simulator.

Prints exactly `listening ws://HOST:PORT` (`wss://` with --tls, preceded by `cert PATH`, the
certificate clients must trust), with --http-port `http http://HOST:PORT` (the WebRTC signalling
routes), and `control http://HOST:PORT` (flushed) once the servers accept connections, then
serves until SIGTERM/SIGINT or --duration.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import sys

import click

from .control import control_serve
from .profiles import ProfileBook, ProfileError
from .server import SimServer, ws_serve
from .state import SimOptions, SimState
from .truth import TruthLog


def _url(scheme: str, sock) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


async def run(host: str, port: int, control_port: int, state: SimState,
              duration: float | None, tls: tuple[str, str] | None = None,
              http_port: int | None = None) -> None:
    from . import audio

    audio.reply_clip("pcm16", state.profiles.for_model(None).delta_ms)  # pre-encode before ready
    # Start-up objects (the pre-encoded audio, modules) never need scanning by the GC again.
    gc.collect()
    gc.freeze()
    sim = SimServer(state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ctx = None
    if tls is not None:
        from .tls import server_context

        ctx = server_context(*tls)
    async with ws_serve(sim, host, port, ssl=ctx) as server:
        control = await control_serve(state, host, control_port)
        http = None
        if http_port is not None:  # imported only when asked: aiortc is a heavy import
            from .webrtc.app import http_serve

            http, _rtc, bound = await http_serve(state, host, http_port)
        ws_sock = next(iter(server.sockets))
        if tls is not None:
            sys.stdout.write(f"cert {tls[0]}\n")
        sys.stdout.write(f"listening {_url('wss' if ctx else 'ws', ws_sock)}\n")
        if http is not None:
            sys.stdout.write(f"http http://{host}:{bound}\n")
        sys.stdout.write(f"control {_url('http', control.sockets[0])}\n")
        sys.stdout.flush()
        try:
            await asyncio.wait_for(stop.wait(), timeout=duration)
        except TimeoutError:
            pass
        control.close()
        if http is not None:
            await http.cleanup()  # hangs up the WebRTC calls (their sessions end with them)
        sessions = [s.chan.close(1001, "server shutting down") for s in list(state.sessions)]
        if sessions:
            await asyncio.wait_for(asyncio.gather(*sessions, return_exceptions=True), 5)
        server.close(close_connections=True)
    await control.wait_closed()
    state.truth.close()


@click.command(name="sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default).")
@click.option("--port", default=8765, show_default=True, type=int,
              help="WebSocket port; 0 picks a free port (printed on the 'listening' line).")
@click.option("--control-port", default=8766, show_default=True, type=int,
              help="Control API (HTTP JSON) port; 0 picks a free port (printed on the 'control' line).")
@click.option("--http-port", type=int, default=None,
              help="Serve the WebRTC signalling routes (POST /v1/realtime/calls, "
                   "/v1/live/sessions) over HTTP on this port; 0 picks a free port (printed on "
                   "the 'http' line). Off by default.")
@click.option("--profiles", "profiles_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of latency/behaviour profiles chosen by model name.")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Accept only this key (repeatable). Default: any non-empty key.")
@click.option("--beta", type=click.Choice(["on", "retired"]), default="on", show_default=True,
              help="'on' serves the legacy beta shape to clients sending OpenAI-Beta: realtime=v1; "
                   "'retired' answers them with beta_api_shape_disabled and close 4000.")
@click.option("--reader", type=click.Choice(["fast", "websockets"]), default="fast",
              show_default=True,
              help="How client frames are read after the handshake: 'fast' (the simulator's own "
                   "frame reader, ~30 us cheaper per frame) or 'websockets' (the library's).")
@click.option("--truth-file", type=click.Path(dir_okay=False), default=None,
              help="Append ground-truth records (one JSON object per line) to this file.")
@click.option("--delta-ms", type=int, default=None,
              help="Audio per output delta in ms, for every profile (profile default 100).")
@click.option("--speed", type=float, default=None,
              help="Reply delivery speed vs real time, for every profile (profile default 2.0).")
@click.option("--ttfa-ms", type=float, default=None,
              help="Fixed TTFA in ms for every profile (overrides the distributions).")
@click.option("--reply-s", type=float, default=None,
              help="Fixed reply length in seconds for every profile.")
@click.option("--seed", type=int, default=None, help="Seed for the latency and fault dice.")
@click.option("--duration", type=float, default=None,
              help="Stop by itself after this many seconds.")
@click.option("--tls", is_flag=True,
              help="Serve wss:// (needed by the google-genai SDK) with a self-signed certificate "
                   "generated at start-up (or --cert/--key); prints 'cert PATH' to trust.")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --tls: serve this PEM certificate (chain) instead of a generated one.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --tls: the PEM private key of --cert.")
@click.option("--go-away-lead-s", type=float, default=60.0, show_default=True,
              help="Gemini: send goAway this many seconds before a connection's lifetime "
                   "(profile session_max_s, or a session_expiry fault) ends it with close 1008.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), help="Log level (stderr).")
def main(host, port, control_port, http_port, profiles_file, api_keys, beta, reader, truth_file, delta_ms, speed,
         ttfa_ms, reply_s, seed, duration, tls, cert_file, key_file, go_away_lead_s, log_level):
    """Reference simulator of realtime voice APIs (OpenAI Realtime GA/beta, Azure shapes,
    Gemini Live).

    Serves ws://HOST:PORT/v1/realtime?model=M, /openai/v1/realtime?model=M,
    /openai/realtime?deployment=D&api-version=V and Gemini Live at
    /ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent (any of v1,
    v1beta, v1alpha; wss with --tls). The model name picks the profile (built-in: sim-fast,
    sim-slow, default). See README.md ("Simulator") and README.md ("Gemini Live").
    """
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level != "DEBUG":
        logging.getLogger("simulator.ws").setLevel(logging.CRITICAL)
    overrides: dict = {}
    if delta_ms is not None:
        overrides["delta_ms"] = delta_ms
    if speed is not None:
        overrides["speed"] = speed
    if ttfa_ms is not None:
        overrides["ttfa_ms"] = ttfa_ms
    if reply_s is not None:
        overrides["reply_s"] = reply_s
    try:
        book = ProfileBook(overrides or None)
        if profiles_file:
            book.load_file(profiles_file)
    except ProfileError as e:
        raise click.UsageError(str(e)) from None
    tls_pair = None
    generated_dir = None
    if (cert_file or key_file) and not (cert_file and key_file and tls):
        raise click.UsageError("--cert and --key go together, with --tls")
    if tls:
        if cert_file:
            tls_pair = (cert_file, key_file)
        else:
            from .tls import generate_self_signed

            tls_pair = generate_self_signed()
            generated_dir = os.path.dirname(tls_pair[0])
    state = SimState(book, SimOptions(list(api_keys), beta, reader, seed, go_away_lead_s),
                     TruthLog(truth_file))
    try:
        asyncio.run(run(host, port, control_port, state, duration, tls_pair, http_port))
    except OSError as e:
        raise click.ClickException(f"cannot listen: {e}") from None
    finally:
        if generated_dir:  # the generated key never outlives the simulator
            shutil.rmtree(generated_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
