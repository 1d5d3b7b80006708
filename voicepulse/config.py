"""Loads and validates voicepulse.yaml: targets, scenarios, sinks and the store, then hands the
service (probes, SLOs, alerts) and load sections to their own parsers.

Everything is checked up front, so a bad value stops the program before anything starts, with a
message that names the file, the key and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from probes.callers import CallerError, check_renderings, parse_callers
from probes.dialects.gpt_live import refused_turn_setting
from probes.prices import PRICE_KEYS
from probes.script import StepError, parse_script, unplayable_step
from probes.spec import (
    PROVIDERS,
    TRANSPORTS,
    TURN_MODES,
    WEBRTC_PROVIDERS,
    Scenario,
    Target,
    Timeouts,
)
from voicepulse.config_load import parse_load
from voicepulse.config_service import parse_service
from voicepulse.configkit import ConfigError, Section

DEFAULT_STORE = "voicepulse.db"
DEFAULT_OUTBOX = ".voicepulse/outbox"
DEFAULT_SIM_URL = "ws://127.0.0.1:8765/v1/realtime"
AUDIO_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw", "pcm16_16k")  # pcm16_16k: GPT-Live only
TURN_MODE_KEYS = TURN_MODES
# read from the field: Target is a slots dataclass, so Target.instructions is a descriptor
DEFAULT_INSTRUCTIONS = Target.__dataclass_fields__["instructions"].default


@dataclass
class Config:
    file: str
    targets: dict[str, Target] = field(default_factory=dict)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    sinks: list[Any] = field(default_factory=list)
    store: str = DEFAULT_STORE
    outbox: str = DEFAULT_OUTBOX
    service: Any = None  # scheduler's ServiceConfig, when the file has `probes:`
    load: Any = None  # loadtests' LoadConfig, when the file has `load:`

    def scenario(self, name: str | None) -> Scenario:
        """A scenario by name, or a scenario file by path (`--scenario scenarios/x.yaml`)."""
        if name is None:
            return self.scenarios.get("default") or Scenario()
        if name not in self.scenarios and name.endswith((".yaml", ".yml")):
            return load_scenario_file(Path(name))
        if name not in self.scenarios:
            known = ", ".join(sorted(self.scenarios)) or "none"
            raise ConfigError(self.file, f"scenarios.{name}", f"no such scenario (known: {known})")
        return self.scenarios[name]

    def target(self, name: str) -> Target:
        if name not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise ConfigError(self.file, f"targets.{name}", f"no such target (known: {known})")
        return self.targets[name]


def default_config() -> Config:
    """The embedded defaults: the built-in simulator as target, the embedded store."""
    return Config(
        file="(built-in defaults)",
        targets={"sim-fast": sim_target("sim-fast"), "sim-slow": sim_target("sim-slow")},
        scenarios={"default": Scenario()},
    )


def sim_target(model: str, url: str = DEFAULT_SIM_URL) -> Target:
    return Target(name=model, url=url, model=model, provider="openai", api_key_env="SIM_API_KEY",
                  simulator_hints=True)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    return parse_config(_read_yaml(path), str(path), base_dir=path.parent)


SCENARIO_FILE_KEYS = "steps, expect, instructions, tools, timeouts, ..."


def load_scenario_file(path: Path, name: str | None = None) -> Scenario:
    """A scenario file: the same keys as an inline scenario (steps, instructions, tools...).
    Errors name this file and the key in it, not the config that points here."""
    data = _read_yaml(path)
    if data is None:
        raise ConfigError(str(path), "", f"empty scenario file (expected {SCENARIO_FILE_KEYS})")
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(top level)", "expected a mapping of scenario settings "
                                                    f"({SCENARIO_FILE_KEYS}), got "
                                                    f"{type(data).__name__}")
    s = Section(data, str(path))
    name = name or s.str("name", path.stem)
    s.str("description", "")
    return _scenario(s, name, path.parent)


def _read_yaml(path: Path) -> Any:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read the file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(file, "", f"not valid YAML{where}") from None
    return data


def parse_config(data: Any, file: str, base_dir: Path | None = None) -> Config:
    root = Section(data, file)
    cfg = Config(file=file)
    for s in root.sections("targets", {}):
        name = s.path.split(".", 1)[1]
        cfg.targets[name] = _target(s, name)
    for s in root.sections("scenarios", {}):
        name = s.path.split(".", 1)[1]
        if s.has("file"):  # `support: {file: scenarios/support-call.yaml}`
            cfg.scenarios[name] = _scenario_ref(s, name, base_dir or Path("."))
        else:
            cfg.scenarios[name] = _scenario(s, name, base_dir or Path("."))
    cfg.scenarios.setdefault("default", Scenario())
    cfg.sinks = [_sink(s) for s in root.sections("sinks", [])]
    cfg.store = root.str("store", DEFAULT_STORE)
    cfg.outbox = root.str("outbox", DEFAULT_OUTBOX)
    cfg.service = parse_service(root, cfg.targets, cfg.scenarios)
    for i, job in enumerate(cfg.service.probes if cfg.service else ()):
        check_playable(cfg.targets[job.target], cfg.scenarios[job.scenario], f"probes[{i}]", file)
    cfg.load = parse_load(root)
    root.done()
    return cfg


#: The local simulator accepts any non-empty key: this placeholder stands in when unset.
SIM_PLACEHOLDER_KEY = "local-simulator"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(url: str) -> bool:
    try:
        return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS
    except ValueError:
        return False


def require_key(target: Target, file: str, key: str) -> None:
    """A target's key variable must be set before anything starts. The one exception, with or
    without a config file: SIM_API_KEY for a target on a loopback URL gets a placeholder when
    unset, because the simulator on this machine takes any key unless started with --api-key (then
    export that key) and a key for it guards nothing. Set in os.environ so the run's child
    processes (Locust workers) see it too. Any other variable, or a target elsewhere, must be set."""
    var = target.api_key_env
    if not var or os.environ.get(var):
        return
    if var == "SIM_API_KEY" and is_loopback(target.url):
        os.environ[var] = SIM_PLACEHOLDER_KEY
        return
    raise ConfigError(file, key, f"environment variable {var} is not set")


def check_playable(target: Target, sc: Scenario, where: str, file: str) -> None:
    """A scenario the target's protocol cannot play is refused before anything runs, naming the
    scenario's file and key; `where` says what paired them. Refused: a step it cannot send (a
    `text` step on GPT-Live) and, on GPT-Live, turn settings the model owns (manual turns,
    silence_ms, interrupt_response: false)."""
    paired = f"({where}: target {target.name}, provider {target.provider})"
    err = None if sc.script is None else unplayable_step(sc.script, target.provider)
    if err is not None:
        raise ConfigError(sc.script.file or file, err.key, f"{err.message} {paired}")
    if target.provider == "openai-live":
        refused = refused_turn_setting(sc.turn_mode, sc.interrupt_response, sc.silence_ms)
        if refused is not None:
            sc_file, path = sc.origin or (file, f"scenarios.{sc.name}")
            key = f"{path}.{refused[0]}" if path else refused[0]
            raise ConfigError(sc_file, key, f"{refused[1]} {paired}")


def require_env(cfg: Config, targets: list[Target]) -> None:
    """Every secret the run will need is in the environment: the sinks' token, user and password
    variables and the targets' key variables. Checked at start, so nothing half-starts."""
    for i, sink in enumerate(cfg.sinks):
        for key in ("token_env", "username_env", "password_env"):
            var = getattr(sink, key, None)
            if var and not os.environ.get(var):
                raise ConfigError(cfg.file, f"sinks[{i}].{key}",
                                  f"environment variable {var} is not set")
    for t in targets:
        require_key(t, cfg.file, f"targets.{t.name}.api_key_env")


def _target(s: Section, name: str) -> Target:
    provider = s.str("provider", "openai", choices=PROVIDERS)
    transport = s.str("transport", "websocket", choices=TRANSPORTS)
    if transport == "webrtc" and provider not in WEBRTC_PROVIDERS:
        raise s.error("transport", "webrtc is only for provider openai (Realtime GA) or "
                                   "openai-live (GPT-Live)")
    t = Target(
        name=name,
        provider=provider,
        transport=transport,
        url=s.url("url", ("ws", "wss") if transport == "websocket" else ("ws", "wss", "http",
                                                                          "https")),
        model=s.str("model"),
        api_key_env=s.env_name("api_key_env", None),
        voice=s.str("voice", None),
        instructions=s.str("instructions", DEFAULT_INSTRUCTIONS),
        input_format=s.str("input_format", "pcm16", choices=AUDIO_FORMATS),
        output_format=s.str("output_format", "pcm16", choices=AUDIO_FORMATS),
        beta=s.bool("beta", False),
        api_version=s.str("api_version", None),
        ca_file=s.str("ca_file", None),
        transcription_model=s.str("transcription_model", None),
        tools=s.list("tools", []),
        simulator_hints=s.bool("simulator_hints", False),
        delegation=s.str("delegation", None, choices=("client", "responses")),
        backend_model=s.str("backend_model", None),
        auth=s.str("auth", None, choices=("bearer", "api-key")),
        quiet_ms=s.num("quiet_ms", None, min=50, max=60_000),
    )
    if provider != "openai-live":  # GPT-Live's keys (probes/dialects/gpt_live.py)
        for k in ("input_format", "output_format"):
            if getattr(t, k) == "pcm16_16k":
                raise s.error(k, "pcm16_16k (audio/pcm at 16 kHz) is only for provider "
                                 "openai-live (GPT-Live)")
        for k in ("delegation", "backend_model", "quiet_ms"):
            if getattr(t, k) is not None:
                raise s.error(k, "only for provider openai-live (GPT-Live)")
    elif t.delegation == "client" and t.tools:
        raise s.error("tools", "delegation: client takes no tools (the app answers every "
                               "delegation); use delegation: responses for function tools")
    if s.has("prices"):
        p = s.section("prices")
        t.prices = {k: v for k in PRICE_KEYS if (v := p.num(k, None, min=0)) is not None}
        p.done()
    s.done()
    return t


def _scenario_ref(s: Section, name: str, base_dir: Path) -> Scenario:
    """`scenarios.X.file`: relative to the config file's folder. A missing file is this
    config's error (its key); anything wrong inside is the scenario file's (its key)."""
    ref = Path(os.path.expanduser(s.str("file")))
    path = ref if ref.is_absolute() else base_dir / ref
    s.done()
    if not path.is_file():
        raise s.error("file", f"no such file: {path}")
    try:
        return load_scenario_file(path, name)
    except ConfigError as e:  # say which config entry led here: one file may serve many
        raise ConfigError(e.file, e.key, f"{e.message} ({s.key('file')} in {s.file})") from None


def _scenario(s: Section, name: str, base_dir: Path) -> Scenario:
    d = Scenario()
    sc = Scenario(
        name=name,
        turns=s.int("turns", d.turns, min=1, max=1000),
        utterance_s=s.num("utterance_s", d.utterance_s, positive=True, max=600),
        trailing_silence_s=s.num("trailing_silence_s", d.trailing_silence_s, min=0, max=60),
        pause_s=s.num("pause_s", d.pause_s, min=0, max=600),
        turn_mode=s.str("turn_mode", d.turn_mode, choices=TURN_MODES),
        chunk_ms=s.int("chunk_ms", d.chunk_ms, min=10, max=1000),
        jitter_buffer_ms=s.num("jitter_buffer_ms", d.jitter_buffer_ms, min=0),
        seed=s.int("seed", d.seed),
        loudness_dbfs=s.num("loudness_dbfs", d.loudness_dbfs, min=-60, max=0),
        instructions=s.str("instructions", None),
        tools=s.list("tools") if s.has("tools") else None,
        transcription_model=s.str("transcription_model", None),
        interrupt_response=s.bool("interrupt_response", True),
        silence_ms=s.int("silence_ms", None, min=100, max=10_000),
        quiet_ms=s.num("quiet_ms", d.quiet_ms, min=50, max=60_000),
        origin=(s.file, s.path),
    )
    if sc.silence_ms is not None and sc.turn_mode != "manual" and (
            sc.trailing_silence_s * 1000 <= sc.silence_ms):
        raise s.error("trailing_silence_s", f"must be longer than silence_ms ({sc.silence_ms} ms),"
                                            " or the server's VAD never ends the turn")
    if s.has("callers"):  # load runs draw each session's caller from it (probes/callers.py)
        try:
            parse_callers(s.raw("callers"))
        except CallerError as e:
            raise s.error("callers" + (f".{e.key}" if e.key else ""), e.message) from None
        sc.callers = s.raw("callers")
    if s.has("steps"):
        try:
            sc.script = parse_script(s.raw("steps"), s.raw("expect", None), base_dir=str(base_dir),
                                     key=s.key("steps"), expect_key=s.key("expect"), file=s.file)
        except StepError as e:
            raise ConfigError(s.file, e.key, e.message) from None
    elif s.has("expect"):
        raise s.error("expect", "only goes with steps (a scripted scenario)")
    if sc.callers:
        try:
            check_renderings(sc)
        except CallerError as e:
            raise s.error(f"callers.{e.key}", e.message) from None
    if s.has("timeouts"):
        t = s.section("timeouts")
        dt = Timeouts()
        sc.timeouts = Timeouts(**{k: t.duration(k, getattr(dt, k)) for k in
                                  ("connect", "ready", "first_audio", "response_done", "session")})
        t.done()
    s.done()
    return sc


def _sink(s: Section) -> Any:
    from telemetry import sinks as tsinks


    kind = s.str("type", choices=("influx",))
    api = s.str("api", "v2", choices=("v1", "v2"))
    assert kind == "influx"
    if api == "v2":
        sink = tsinks.InfluxV2Sink(
            url=s.url("url", ("http", "https")),
            org=s.str("org"),
            bucket=s.str("bucket"),
            token_env=s.env_name("token_env", None),
            gzip=s.bool("gzip", True),
            verify_tls=s.bool("verify_tls", True),
            ca_file=s.str("ca_file", None),
        )
    else:
        sink = tsinks.InfluxV1Sink(
            url=s.url("url", ("http", "https")),
            database=s.str("database"),
            retention_policy=s.str("retention_policy", None),
            username_env=s.env_name("username_env", None),
            password_env=s.env_name("password_env", None),
            token_env=s.env_name("token_env", None),
            precision=s.str("precision", "ns", choices=("ns", "u", "ms", "s")),
            gzip=s.bool("gzip", False),
            verify_tls=s.bool("verify_tls", True),
            ca_file=s.str("ca_file", None),
        )
    s.done()
    return sink
