"""The process's one asyncio event loop for WebRTC (aiortc), in a native OS thread, and the ways
back from it to the engine's blocking side (OS threads, or greenlets under gevent).

aiortc is asyncio; the engine (probes/session.py) is blocking and runs in OS threads (CLI,
scheduler) or as greenlets under gevent's monkey-patching (Locust). ENGINEERING-NOTES.md §1
records what that bridge needs, and this module does exactly that:

- the loop runs in a *native* thread: under monkey-patching `threading.Thread` makes a greenlet,
  so the thread is started with the original `_thread.start_new_thread`, and the loop gets the
  original epoll selector (gevent's selector would park the native thread on a hub);
- locks the two sides share are original (`_thread.allocate_lock`), held for microseconds;
- results come back to a greenlet only through a gevent `hub.loop.async_()` watcher, whose
  `send()` is the one thread-safe way into a hub (gevent's Event/AsyncResult are not, gevent
  #1739): `wait_future` for one result, `Inbox` for a stream of callbacks (frames, RTP events);
- without gevent, `wait_future` is `Future.result` and an Inbox calls its handler on the loop
  thread (the handlers are the engine's receiver side, which is thread-safe by design).

`loopback_only()` is the client's own ICE restriction for targets on a loopback address: host
candidates on 127.0.0.1 only, remote candidates elsewhere dropped (per connection, through a
context variable, so a process may also talk to real providers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import ipaddress
import logging
import sys

import aioice.ice

_LOG = logging.getLogger("probes.rtc")
_state: dict = {"loop": None}


def gevent_patched() -> bool:
    """True in a process whose threading gevent has monkey-patched (a Locust worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def _original(module: str, name: str):
    if gevent_patched():
        from gevent import monkey

        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


def native_lock():
    """A lock that is a real OS lock even under monkey-patching (shared with the loop thread)."""
    return _original("_thread", "allocate_lock")()


_start_lock = native_lock()


def loop() -> asyncio.AbstractEventLoop:
    """The process's WebRTC loop, started on first use (and again after a fork)."""
    lp = _state["loop"]
    if lp is not None and _state.get("pid") == _pid():
        return lp
    with _start_lock:
        lp = _state["loop"]
        if lp is not None and _state.get("pid") == _pid():
            return lp
        selector = _original("selectors", "DefaultSelector")()
        lp = _Loop(selector)
        ready = _original("_thread", "allocate_lock")()
        ready.acquire()

        def run() -> None:
            asyncio.set_event_loop(lp)
            ready.release()
            try:
                lp.run_forever()
            except Exception:  # a bug of ours: every session on it ends through its deadline
                _LOG.exception("the WebRTC event loop died")

        _original("_thread", "start_new_thread")(run, ())
        ready.acquire()
        _state["loop"], _state["pid"] = lp, _pid()
        return lp


class _Loop(asyncio.SelectorEventLoop):
    """The loop, with blocking calls handed to native threads under gevent.

    asyncio runs `run_in_executor(None, ...)` (getaddrinfo for every host name, for one) on a
    ThreadPoolExecutor, whose threads gevent turns into greenlets of a hub nobody runs in the
    loop's thread: the call would never return. Here each such call gets a native thread, the
    original getaddrinfo/getnameinfo, and its result comes back by call_soon_threadsafe."""

    def run_in_executor(self, executor, func, *args):
        if executor is not None or not gevent_patched():
            return super().run_in_executor(executor, func, *args)
        import socket

        if func is socket.getaddrinfo or func is socket.getnameinfo:
            func = _original("socket", func.__name__)
        fut = self.create_future()

        def work() -> None:
            try:
                result, exc = func(*args), None
            except BaseException as e:  # handed to the awaiting coroutine
                result, exc = None, e
            try:
                self.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        _original("_thread", "start_new_thread")(work, ())
        return fut


def _settle(fut, result, exc) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _pid() -> int:
    import os

    return os.getpid()


def submit(coro):
    """Run `coro` on the loop; a concurrent.futures.Future of its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def wait_future(fut, timeout_s: float):
    """The result of a concurrent future from the blocking side (a greenlet or a thread);
    TimeoutError after `timeout_s` (the future is cancelled)."""
    if not gevent_patched():
        import concurrent.futures

        try:
            return fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError from None
    import gevent
    from gevent.event import Event

    hub = gevent.get_hub()
    watcher = hub.loop.async_()
    done = Event()
    watcher.start(done.set)
    try:
        fut.add_done_callback(lambda _f: watcher.send())
        if not done.wait(timeout_s) and not fut.done():
            fut.cancel()
            raise TimeoutError
    finally:
        watcher.stop()
        watcher.close()
    return fut.result(0)


def call(coro, timeout_s: float):
    """Run `coro` on the loop and wait for its result (raises what it raised)."""
    return wait_future(submit(coro), timeout_s)


class Inbox:
    """Callbacks from the loop thread run on the engine's receiving side, in order.

    Without gevent they run at once, on the loop thread. Under gevent they are queued and a
    watcher runs them on the hub of the greenlet that made the Inbox (never a gevent object
    touched from the loop thread)."""

    def __init__(self) -> None:
        self._watcher = None
        if gevent_patched():
            import gevent

            self._q: collections.deque = collections.deque()
            self._lock = native_lock()
            self._pending = False  # a send() is on its way: later puts ride on it
            self._watcher = gevent.get_hub().loop.async_()
            self._watcher.start(self._drain)

    def put(self, fn, *args) -> None:
        w = self._watcher
        if w is None:
            _run(fn, args)
            return
        with self._lock:
            self._q.append((fn, args))
            if self._pending:
                return
            self._pending = True
        w.send()  # wakes the hub once for everything queued until it drains

    def _drain(self) -> None:
        with self._lock:
            self._pending = False
        q = self._q
        while q:
            fn, args = q.popleft()
            _run(fn, args)

    def close(self) -> None:
        """Stop the watcher (on the blocking side), after running what is still queued."""
        w, self._watcher = self._watcher, None
        if w is not None:
            self._drain()
            w.stop()
            w.close()


def _run(fn, args) -> None:
    try:
        fn(*args)
    except Exception:  # the engine's handlers catch their own; this is a last resort
        _LOG.exception("WebRTC callback failed")


# ---- loopback-only ICE for the client ----------------------------------------------------------

_ONLY: contextvars.ContextVar[str | None] = contextvars.ContextVar("vp_ice_only", default=None)
#: what aioice did before our wrappers went in; outside a block they defer to it (so another
#: restriction of the same process, e.g. a test's own aiortc peers, keeps working)
_prev = {"hosts": aioice.ice.get_host_addresses,
         "add": aioice.ice.Connection.add_remote_candidate}


def _install() -> None:
    """Wrap aioice's two hooks, again whenever something replaced our wrappers since."""
    ice = aioice.ice
    if ice.get_host_addresses is not _host_addresses:
        _prev["hosts"], ice.get_host_addresses = ice.get_host_addresses, _host_addresses
    if ice.Connection.add_remote_candidate is not _add_remote_candidate:
        _prev["add"] = ice.Connection.add_remote_candidate
        ice.Connection.add_remote_candidate = _add_remote_candidate


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    only = _ONLY.get()
    return [only] if only is not None else _prev["hosts"](use_ipv4=use_ipv4, use_ipv6=use_ipv6)


async def _add_remote_candidate(self, remote_candidate) -> None:
    only = getattr(self, "_vp_only", None)
    if only is None:
        only = self._vp_only = _ONLY.get() or ""
    if only and remote_candidate is not None and remote_candidate.host != only:
        _LOG.info("webrtc: remote candidate on %s ignored (ICE restricted to %s)",
                  remote_candidate.host, only)
        return
    await _prev["add"](self, remote_candidate)


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def loopback_only(active: bool, address: str = "127.0.0.1"):
    """Within the block (on the loop), peers gather host candidates on `address` only and keep
    only remote candidates on it (when `active`); aioice is wrapped (again if something replaced the wrappers), and its
    behaviour is unchanged outside such a block."""
    with _start_lock:
        _install()
    token = _ONLY.set(address if active else None)
    try:
        yield
    finally:
        _ONLY.reset(token)
