"""The skeleton every simulated protocol session shares: its channel, its tasks and timers, the
receive loop, the reply task's outcome, barge-in cancellation and clean-up.

A protocol subclasses `Session` and supplies `model` and `instructions` (as they are now), `start`
(its handshake), `dispatch` (one client message), `internal_error`, and for its replies
`reply_body`, `cancel_wanted`, `send_cancelled` and `fault_end` (the faults its protocol acts out
itself; see reply.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from websockets.exceptions import ConnectionClosed

from . import markers
from .channel import MAX_MESSAGE, FastChannel, WebsocketsChannel
from .faults import SESSION_KINDS, TURN_KINDS

if TYPE_CHECKING:
    from .faults import Fault
    from .profiles import Profile
    from .state import SimState

log = logging.getLogger("simulator")


@dataclass(slots=True, kw_only=True)
class HeardTurn:
    """A user input turn as the server heard it; a protocol subclasses it for its own."""

    speech_start_ns: int | None = None  # the input frame holding its first speech arrived
    speech_end_ns: int | None = None  # the input frame holding its last speech arrived


def lifetime_s(profile: Profile, faults: list[Fault]) -> float:
    """The connection's lifetime: the profile's session limit, or a `session_expiry` fault's."""
    out = profile.session_max_s
    for f in faults:
        if f.kind == "session_expiry":
            out = min(out, float(f.params["after_s"]))
    return out


class Session:
    """One connection. `active` is the reply in progress: an object with `.truth` (TurnTruth)
    and `.task`."""

    #: the close reason when the session ends with its channel still open
    INTERNAL_REASON = "internal error"
    #: the frame I/O: (fast, plain), as --reader picks; fast takes the transport over
    CHANNELS: tuple[type, type] = (FastChannel, WebsocketsChannel)

    def __init__(self, state: SimState, ws, info):
        self.state, self.ws, self.info = state, ws, info
        self.rng = state.rng
        self.active = None
        self.turn_index = 0
        self.user_inputs = 0  # user inputs so far (markers.py counts them)
        self.transcribed = 0  # user audio turns whose transcription was started
        self.closing = False
        self.tasks: set[asyncio.Task] = set()
        self.timers: list[asyncio.TimerHandle] = []

    @property
    def profile(self) -> Profile:
        """The model's profile as it is now: PUT /profile takes effect on the next turn."""
        return self.state.profiles.for_model(self.model)

    #: the error code for a client event that is not JSON (Realtime's; GPT-Live's is its own)
    BAD_JSON_CODE = "invalid_event"

    async def decode_event(self, raw: bytes) -> dict | None:
        """An OpenAI protocol's client event as a JSON object, or None once the error it earns
        is answered (`error`, the subclass's)."""
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self.error(self.BAD_JSON_CODE,
                             "We could not parse the JSON body of your request.")
            return None
        if not isinstance(msg, dict):
            await self.error("invalid_event", "The event must be a JSON object.")
            return None
        return msg

    def arm_faults(self, truth) -> float:
        """Once the model is known (Gemini's setup, GPT-Live's session.start): pick the session's
        faults, record the session-wide ones in its truth, keep the turn ones for the replies
        (`turn_faults`); returns the connection's lifetime."""
        prof = self.profile
        faults = self.state.faults.pick(prof, self.model, SESSION_KINDS)
        faults += self.state.faults.pick(prof, self.model, TURN_KINDS, per="session")
        truth.faults += [f.record() for f in faults if f.kind in SESSION_KINDS]
        self.turn_faults = [f for f in faults if f.kind in TURN_KINDS]
        return lifetime_s(prof, faults)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def later(self, delay_s: float, coro_fn) -> None:
        """Run `coro_fn()` as a session task after delay_s (cancelled with the session)."""
        loop = asyncio.get_running_loop()
        self.timers.append(loop.call_later(delay_s, lambda: self._spawn(coro_fn())))

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> bool:
        """The protocol's handshake; False when the session ends there."""
        raise NotImplementedError

    async def dispatch(self, raw: bytes, t: int) -> None:
        raise NotImplementedError

    async def internal_error(self) -> bool:
        """A bug handling a client message (logged): tell the client; False ends the session."""
        raise NotImplementedError

    async def ready_delay(self) -> None:
        delay = self.profile.ready_delay_ms.sample(self.rng)
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    async def run(self) -> None:
        st = self.info.truth
        st.session_id = self.id
        fast, plain = self.CHANNELS
        make = fast.take_over if self.state.options.reader == "fast" else plain
        self.chan = make(self.ws, MAX_MESSAGE)
        self.state.sessions.add(self)
        try:
            if await self.start():
                while True:
                    raw, t = await self.chan.recv()
                    try:
                        await self.dispatch(raw, t)
                    except ConnectionClosed:
                        raise
                    except Exception:  # a bug must not take the server (or this session) down
                        log.exception("simulator: error handling a client message (%s)",
                                      type(self).__name__)
                        if not await self.internal_error():
                            break
        except ConnectionClosed:
            pass
        finally:
            await self.clean_up()

    async def clean_up(self) -> None:
        st = self.info.truth
        self.closing = True
        for h in self.timers:
            h.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.state.sessions.discard(self)
        if isinstance(self.chan, FastChannel) and self.chan.open:
            await self.chan.close(1011, self.INTERNAL_REASON)
        st.closed_ns = time.monotonic_ns()
        st.close_code = self.chan.close_code
        if st.outcome == "open":
            st.outcome = "closed"

    # ---- replies ----------------------------------------------------------------------------

    def cancel_later(self, reply) -> None:
        """Barge-in: the reply's task is cancelled after the profile's cancel delay."""
        delay = self.profile.cancel_delay_ms.sample(self.rng)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay / 1000, self._cancel, reply)
        else:
            self._cancel(reply)

    def _cancel(self, reply) -> None:
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()

    async def reply_body(self, reply) -> None:
        raise NotImplementedError

    def cancel_wanted(self, reply) -> bool:
        """Whether a cancelled reply task was a barge-in or a client cancel (to be answered)."""
        raise NotImplementedError

    async def send_cancelled(self, reply) -> int:
        """Tell the client the reply was cancelled; returns when that was written."""
        raise NotImplementedError

    def reply_ended(self, reply) -> None:
        """The reply is over (any outcome): record its truth."""
        self.state.truth.turn(reply.truth)

    async def run_reply(self, reply) -> None:
        tr = reply.truth
        try:
            await self.reply_body(reply)
        except asyncio.CancelledError:
            if self.closing or not self.cancel_wanted(reply):
                tr.status = "closed" if tr.status == "in_progress" else tr.status
                raise
            try:
                tr.cancel_ns = await self.send_cancelled(reply)
            except ConnectionClosed:
                tr.status = "closed"
        except ConnectionClosed:
            if tr.status == "in_progress":
                tr.status = "closed"
        finally:
            if self.active is reply:
                self.active = None
            self.reply_ended(reply)

    async def transcript_text(self, k: int, key: str) -> str:
        """The transcript of user audio turn k (0-based over transcribed turns), after the
        profile's transcription delay: the k-th marker, with the profile's WER seeded by `key`."""
        delay = self.profile.transcription_delay_ms.sample(self.rng)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        prof = self.profile
        text = (markers.transcript_for(self.instructions, k) or prof.transcript
                or "simulated speech")
        if prof.wer > 0:
            text = markers.inject_wer(text, prof.wer, key)
        return text
