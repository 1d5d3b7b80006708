"""The Locust side of VoicePulse: the session-slot User, the LoadTestShape, custom arguments and
the event wiring between workers and the master.

Importing this module registers the event listeners; `loadtests/locustfile.py` only re-exports
`VoiceSessionUser` and `VoiceShape` so plain `locust -f loadtests/locustfile.py` finds them.

Flow: the master (or the single local process) starts the slots through the shape; once spawning
completes it tells each worker its share of the arrivals (`vp_start`: index, count). Workers
ship encoded HDR deltas with every Locust report (`report_to_master` -> `worker_report`), and a
last one (`vp_final`) once their arrivals are done and their sessions have ended, at which point
the shape stops the run. The master merges, writes `latency`/`loadgen`/`turn`/`session` points
through telemetry every interval, and at `quitting` prints and writes the summary and sets the
exit status from the thresholds.
"""

from __future__ import annotations

import logging
import os
import sys

import gevent
import orjson
from locust import LoadTestShape, User, constant, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadtests.collector import Collector, WorkerTrack, result_from_dict
from loadtests.plan import LoadConfig, Plan, default_target
from loadtests.profile import parse_shape, parse_stages
from loadtests.worker import WorkerState
from probes.spec import Scenario

log = logging.getLogger("voicepulse.load")

REQUEST_TYPE = "voice"
LOCAL_REPORT_S = 3.0
SPAWN_RATE = 1000.0
TAKE_TIMEOUT_S = 0.25
STATUS_S = 1.0
#: Locust stats names (docs/metrics.md metric names without the unit) -> result attribute.
SESSION_EVENTS = (("connect", "connect_ms"), ("ready", "ready_ms"))
TURN_EVENTS = (("ttfa", "ttfa_ms"), ("ttft", "ttft_ms"), ("vad", "vad_ms"), ("turn", "turn_ms"))


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    g = parser
    g.add_argument("--vp-plan", env_var="VOICEPULSE_PLAN", default="", include_in_web_ui=False,
                   help="The whole run as JSON (written by `voicepulse load`); overrides --vp-*")
    g.add_argument("--vp-url", env_var="VOICEPULSE_URL", default="ws://127.0.0.1:8765/v1/realtime",
                   help="Target WebSocket URL (OpenAI Realtime protocol)")
    g.add_argument("--vp-model", env_var="VOICEPULSE_MODEL", default="sim-fast", help="Model")
    g.add_argument("--vp-api-key-env", env_var="VOICEPULSE_API_KEY_ENV", default="SIM_API_KEY",
                   help="Name of the environment variable holding the API key")
    g.add_argument("--vp-rate", env_var="VOICEPULSE_RATE", type=float, default=1.0,
                   help="Open model: sessions per second")
    g.add_argument("--vp-users", env_var="VOICEPULSE_USERS", type=int, default=0,
                   help="Closed model: concurrent sessions (0 = open model)")
    g.add_argument("--vp-arrivals", env_var="VOICEPULSE_ARRIVALS", default="constant",
                   choices=["constant", "poisson"], help="Open-model arrival process")
    g.add_argument("--vp-shape", env_var="VOICEPULSE_SHAPE", default="",
                   help="ramp|step|spike|soak[:param=value,...]")
    g.add_argument("--vp-stages", env_var="VOICEPULSE_STAGES", default="",
                   help="duration:target,... e.g. 10s:5,30s:5,10s:0")
    g.add_argument("--vp-duration", env_var="VOICEPULSE_DURATION", type=float, default=30.0,
                   help="Seconds of arrivals")
    g.add_argument("--vp-turns", env_var="VOICEPULSE_TURNS", type=int, default=2,
                   help="Turns per session")
    g.add_argument("--vp-threshold", env_var="VOICEPULSE_THRESHOLD", default="",
                   help="Thresholds separated by ';', e.g. ttfa_ms.p95<800;error_rate<0.01")
    g.add_argument("--vp-summary-json", env_var="VOICEPULSE_SUMMARY_JSON", default="",
                   help="Write the end-of-run summary here")


def plan_from_options(opts) -> Plan:
    if getattr(opts, "vp_plan", ""):
        return Plan.from_json(opts.vp_plan)
    lc = LoadConfig(rate=None if opts.vp_users else opts.vp_rate,
                    users=opts.vp_users or None, arrivals=opts.vp_arrivals,
                    duration_s=opts.vp_duration,
                    thresholds=[t for t in opts.vp_threshold.split(";") if t.strip()])
    if opts.vp_stages:
        lc.stages = parse_stages(opts.vp_stages)
    elif opts.vp_shape:
        lc.shape, lc.shape_params = parse_shape(opts.vp_shape)
    tgt = default_target(opts.vp_url, opts.vp_model)
    tgt.api_key_env = opts.vp_api_key_env or None
    return Plan(target=tgt, scenario=Scenario(turns=opts.vp_turns), load=lc, record=False,
                summary_json=opts.vp_summary_json or None)


class _Role:
    """Per-process singletons: the worker state (workers, local) and the controller (master, local)."""

    env = None
    worker: WorkerState | None = None
    controller: Controller | None = None


def _plan(env) -> Plan:
    return plan_from_options(env.parsed_options)


def worker_state(env) -> WorkerState:
    if _Role.worker is None:
        runner = env.runner
        name = f"worker-{getattr(runner, 'worker_index', 0)}" if isinstance(runner, WorkerRunner) \
            else "local"
        w = WorkerState(_plan(env), name)
        if isinstance(runner, WorkerRunner):
            w.on_final = lambda payload: runner.send_message("vp_final", payload)
        else:
            w.on_final = lambda payload: _Role.controller and _Role.controller.merge("local", payload)
            w.encode_reports = False
        _Role.worker = w
    return _Role.worker


class CallerTally:
    """One drawn caller's sessions in a run (the summary's `callers`), from the results the
    workers ship (so only when turn points or --results-jsonl are on); bounded samples."""

    MAX = 20_000

    def __init__(self) -> None:
        self.sessions = self.ok = self.turns = self.no_speech = 0
        self.ttfa: list[float] = []
        self.vad: list[float] = []

    def add(self, r: dict) -> None:
        self.sessions += 1
        self.ok += r.get("outcome") == "ok"
        for t in r.get("turns") or ():
            self.turns += 1
            self.no_speech += (t.get("checks") or {}).get("no_reply_without_speech") is False
            for samples, v in ((self.ttfa, t.get("ttfa_ms")), (self.vad, t.get("vad_ms"))):
                if v is not None and len(samples) < self.MAX:
                    samples.append(v)

    def stats(self) -> dict:
        from telemetry.stats import percentile as p

        return {"sessions": self.sessions, "ok": self.ok, "turns": self.turns,
                "ttfa_p50": p(self.ttfa, 50), "ttfa_p95": p(self.ttfa, 95),
                "vad_p50": p(self.vad, 50), "no_speech": self.no_speech}


class Controller:
    """Master (or local) side: start the workers' arrivals, merge, write points, summarise."""

    def __init__(self, env, plan: Plan):
        self.env, self.plan = env, plan
        self.collector = Collector(plan)
        self.recorder = None
        self.done = False
        self.names: dict[str, str] = {}
        self.callers: dict[str, CallerTally] = {}  # per drawn caller, from shipped results
        if plan.record:  # the destination the command chose, carried by the plan
            from telemetry.wiring import Telemetry

            telemetry = Telemetry(tuple(plan.sink_configs()), plan.store, plan.outbox)
            self.recorder = telemetry.recorder(plan.load.interval_s, aggregate=False)
        self.hard_limit_s = (10.0 + plan.load.slot_count(plan.scenario) / SPAWN_RATE
                             + plan.load.profile().duration_s + plan.load.drain_s)
        self._greenlets = [gevent.spawn(self._writer)]
        if plan.status_jsonl:
            self._greenlets.append(gevent.spawn(self._status))
        if isinstance(env.runner, LocalRunner):
            self._greenlets.append(gevent.spawn(self._local_reporter))

    def merge(self, worker: str, payload: dict) -> None:
        self.collector.merge(self.names.get(worker, worker), payload)
        if self.collector.aborted and not self.done:
            log.warning("threshold %s failed: aborting the run (abort_on_fail)",
                        self.collector.aborted)

    def begin(self) -> None:
        if self.collector.started:
            return
        runner = self.env.runner
        if isinstance(runner, MasterRunner):
            ids = sorted(c.id for c in runner.clients.values() if c.state != "missing")
        else:
            ids = ["local"]
        self.names = {cid: (f"worker-{i}" if cid != "local" else cid) for i, cid in enumerate(ids)}
        self.collector.begin(list(self.names.values()))
        for i, cid in enumerate(ids):
            if isinstance(runner, MasterRunner):
                runner.send_message("vp_start", {"index": i, "count": len(ids)}, client_id=cid)
            else:
                runner.send_message("vp_start", {"index": 0, "count": 1})

    def should_stop(self, run_time: float) -> bool:
        c = self.collector
        return bool(c.aborted) or c.all_final or run_time > self.hard_limit_s

    def _local_reporter(self) -> None:
        while True:
            gevent.sleep(LOCAL_REPORT_S)
            w = _Role.worker
            if w is not None and w.started.is_set() and not w.final_sent:
                self.merge("local", w.report(encode=False))

    def _write(self, final: bool = False) -> None:
        points = self.collector.flush(final=final, pause=None if final else gevent.idle)
        results = self.collector.take_results()
        for r in results if self.plan.scenario.callers else ():
            self.callers.setdefault(r.get("caller") or "default", CallerTally()).add(r)
        if self.plan.results_jsonl and results:
            with open(self.plan.results_jsonl, "ab") as f:
                f.write(b"".join(orjson.dumps(r) + b"\n" for r in results))
        if self.recorder is None:
            return
        from telemetry.points import session_points

        self.recorder.write(points)
        batch = []
        for r in results:
            batch.extend(session_points(result_from_dict(r)))
        if batch:
            self.recorder.write(batch)

    def _status(self) -> None:
        while True:
            gevent.sleep(STATUS_S)
            if not self.collector.started:
                continue
            w = _Role.worker
            if w is not None:  # local: the slots are in this process, fresher than reports
                self.collector.workers.setdefault("local", WorkerTrack("local"))
                self.collector.workers["local"].in_flight = w.in_flight
                self.collector.workers["local"].users = w.users
            try:
                with open(self.plan.status_jsonl, "ab") as f:
                    f.write(orjson.dumps(self.collector.status()) + b"\n")
            except OSError:
                pass

    def _writer(self) -> None:
        while True:
            gevent.sleep(self.plan.load.interval_s)
            try:
                self._write()
            except Exception:
                log.exception("writing load points failed")

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        w = _Role.worker
        if isinstance(self.env.runner, LocalRunner) and w is not None and not w.final_sent:
            w.final_sent = True
            w.delta.counters.dropped += w.queue.qsize()
            self.collector.merge("local", w.report(encode=False))
        for g in self._greenlets:
            g.kill(block=False)
        self._write(final=True)
        summary = self.collector.summary()
        summary.callers = {k: t.stats() for k, t in self.callers.items()}
        if self.recorder is not None:
            self.recorder.close(timeout=10.0)
        failed = not summary.passed or bool(summary.aborted)
        self.env.process_exit_code = 1 if failed else 0
        if self.plan.summary_json:
            with open(self.plan.summary_json, "wb") as f:
                f.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
        if not os.environ.get("VOICEPULSE_WRAPPED"):
            sys.stdout.write(summary.table() + "\n")
            sys.stdout.flush()


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    _Role.env = environment
    _Role.worker = None
    _Role.controller = None
    runner = environment.runner
    if runner is None:
        return
    if isinstance(runner, MasterRunner | LocalRunner):
        _Role.controller = Controller(environment, _plan(environment))
        if environment.web_ui is not None:  # --web: the VoicePulse tab, where the merged data is
            from loadtests.web_tab import register

            register(environment.web_ui, lambda: _Role.controller and _Role.controller.collector)

        def on_final(environment, msg, **_kw):
            _Role.controller.merge(msg.node_id, msg.data)

        runner.register_message("vp_final", on_final)
    if isinstance(runner, WorkerRunner | LocalRunner):
        def on_start(environment, msg, **_kw):
            w = worker_state(environment)
            if w.plan.scenario.callers and not w.started.is_set():
                use_callers(w, msg.data["index"], msg.data["count"])
            w.start(msg.data["index"], msg.data["count"])
            if os.environ.get("VOICEPULSE_TEST_BURN"):
                gevent.spawn(_burn_cpu, w, os.environ["VOICEPULSE_TEST_BURN"])

        runner.register_message("vp_start", on_start)


@events.spawning_complete.add_listener
def _on_spawned(user_count, **_kw) -> None:
    if _Role.controller is not None:
        _Role.controller.begin()


@events.report_to_master.add_listener
def _on_report(client_id, data, **_kw) -> None:
    w = _Role.worker
    if w is not None and w.started.is_set() and not w.final_sent:
        data["voicepulse"] = w.report()


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_kw) -> None:
    if _Role.controller is not None and "voicepulse" in data:
        _Role.controller.merge(client_id, data["voicepulse"])


@events.quitting.add_listener
def _on_quit(environment, **_kw) -> None:
    if _Role.controller is not None:
        _Role.controller.finish()
    if _Role.worker is not None:
        _Role.worker.stop()


def use_callers(w: WorkerState, index: int, count: int) -> None:
    """Sessions as drawn callers (the scenario's `callers:`, probes/callers.py): every variant
    rendered now, before the clock starts, and this worker's k-th session is the run's session
    k * count + index, which picks its caller from its (seed, index) stream and is stored with
    it (`caller`)."""
    from probes.callers import CallerPool
    from probes.session import prepare

    pool = CallerPool(w.plan.scenario, w.plan.load.seed)
    for sc in pool.scenarios:
        try:
            prepare(w.plan.target, sc)
        except Exception:  # noqa: BLE001 - a bad spec shows up as the sessions' outcome
            pass
    started = iter(range(1 << 62))
    run = w.run_session

    def run_as_caller(target, scenario, **kw):
        caller, sc = pool.pick(next(started) * count + index)
        r = run(target, sc, **kw)
        r.caller = caller.label
        return r

    w.run_session = run_as_caller


def _burn_cpu(w: WorkerState, spec: str) -> None:
    """Test-only (VOICEPULSE_TEST_BURN="SESSIONS:MS"): once SESSIONS are in flight, hold the
    event loop for MS of every 100 ms, so a test can make the generator fall behind on purpose
    and check that the run says so."""
    import time

    at, _, ms = spec.partition(":")
    n, busy_s = int(at), float(ms or 50) / 1000.0
    while True:
        gevent.sleep(0.1)
        if w.in_flight >= n:
            end = time.perf_counter() + busy_s
            while time.perf_counter() < end:  # no yield: every greenlet waits
                pass


def _fire(env, name: str, ms: float, exc: Exception | None = None) -> None:
    env.events.request.fire(request_type=REQUEST_TYPE, name=name, response_time=ms,
                            response_length=0, exception=exc, context={})


class VoiceSessionUser(User):
    """One session slot: each task iteration runs one voice session through the probes engine.

    Open model: the slot waits for the next due arrival (intended start) from the worker's
    dispatcher. Closed model: it starts the next session as soon as the last one ended.
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        worker_state(self.environment).users += 1

    def on_stop(self) -> None:
        worker_state(self.environment).users -= 1

    @task
    def session(self) -> None:
        w = worker_state(self.environment)
        intended = w.take(TAKE_TIMEOUT_S)
        if intended is None:
            return
        r = w.run_one(intended)
        env = self.environment
        for name, attr in SESSION_EVENTS:
            v = getattr(r, attr)
            if v is not None:
                _fire(env, name, v)
        for t in r.turns:
            failed = t.outcome != "ok"
            for name, attr in TURN_EVENTS:
                v = getattr(t, attr)
                if v is not None and not (failed and name == "turn"):
                    _fire(env, name, v)
            if failed:  # a Locust failure under `turn`, carrying the error class
                _fire(env, "turn", t.turn_ms or 0.0, RuntimeError(t.outcome))
        _fire(env, "session", r.duration_s * 1000.0,
              None if r.ok else RuntimeError(r.outcome))
        lc = w.plan.load
        if not r.ok and lc.model == "closed" and lc.closed_retry_s > 0:
            gevent.sleep(lc.closed_retry_s)  # a caller retrying after a refusal, not a loop


class VoiceShape(LoadTestShape):
    """Bounds every run and drives the slots: open model -> all slots at once (the arrival
    process, not the user count, sets the load); closed model -> users follow the profile.
    Stops when every worker has sent its final report, on abort_on_fail, or at a hard limit."""

    def tick(self):
        ctl = _Role.controller
        if ctl is None:
            return None
        t = self.get_run_time()
        if ctl.should_stop(t):
            return None
        lc = ctl.plan.load
        if lc.model == "open":
            return (lc.slot_count(ctl.plan.scenario), SPAWN_RATE)
        prof = lc.profile()
        level = prof.level(min(t, max(prof.duration_s - 1e-6, 0.0)))
        return (max(int(round(level)), 1), SPAWN_RATE)
