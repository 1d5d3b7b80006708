"""The `voicepulse` command: probe, demo, results, status, config check, sim, serve, alerts,
load."""

from __future__ import annotations

import sys

import click
import orjson

from probes.spec import PROVIDERS
from simulator.cli import main as sim_main
from voicepulse.cmd_load import load
from voicepulse.cmd_report import report
from voicepulse.cmd_results import results, status
from voicepulse.cmd_service import alerts, serve
from voicepulse.configkit import ConfigError, parse_duration
from voicepulse.errors import ConfigErrorExit
from voicepulse.wiring import load_or_default, telemetry_for

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="voicepulse")
def main() -> None:
    """VoicePulse load-tests and watches realtime voice AI APIs (OpenAI Realtime, Azure OpenAI
    Realtime, Gemini Live and servers that copy their protocols).

    \b
    First steps:
      voicepulse demo                 simulator + probes + summary on built-in defaults
      voicepulse sim                  the reference simulator on ws://127.0.0.1:8765
      voicepulse probe sim-fast       one measured voice session against a target
      voicepulse results --since 1h   what the store holds
      voicepulse config check FILE    validate a voicepulse.yaml
    """


# -- config ----------------------------------------------------------------------------------
@main.group("config", context_settings=CONTEXT)
def config_group() -> None:
    """Validate configuration files."""


@config_group.command("check", context_settings=CONTEXT)
@click.argument("file", default="voicepulse.yaml", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE (default ./voicepulse.yaml). Errors name the file, the key and what was
    expected; the exit status is 2 when the file is not valid."""
    cfg = load_or_default(file)
    click.echo(f"{file}: ok ({len(cfg.targets)} targets, {len(cfg.scenarios)} scenarios, "
               f"{len(cfg.sinks) or 'no'} sinks{'' if cfg.sinks else ', embedded store ' + cfg.store})")
    for name, sc in cfg.scenarios.items():
        if sc.script is not None:
            click.echo(f"  scenario {name}: {scripted_summary(sc.script)}")


def scripted_summary(script) -> str:
    """`7 steps` or `1 step, expects session_expired, may run 65m`: what a scripted scenario
    will do, so a reviewer sees a long call before it is scheduled."""
    n = len(script.steps)
    parts = [f"scripted, {n} step{'' if n == 1 else 's'}"]
    if script.expect:
        parts.append(f"expects {script.expect}")
    if script.longest_s() > 0:
        parts.append(f"may run {script.longest_s() / 60:g}m")
    return ", ".join(parts)


# -- probe -----------------------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.argument("target", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="voicepulse.yaml to read targets and scenarios from (default ./voicepulse.yaml "
                   "if present, else the built-in simulator targets).")
@click.option("--url", help="Probe this WebSocket URL instead of a configured target.")
@click.option("--model", help="Model (or Azure deployment) to ask for, with --url.")
@click.option("--provider", type=click.Choice(PROVIDERS),
              default=None, help="Protocol family of --url (default openai; openai-live is "
                                 "GPT-Live, /v1/live/sessions).")
@click.option("--api-key-env", metavar="VAR",
              help="Name of the environment variable holding the API key (never the key itself).")
@click.option("--scenario", default=None,
              help="Scenario name from the config, or a scenario file (scenarios/support-call.yaml); "
                   "default: the config's `default` scenario.")
@click.option("--turns", type=click.IntRange(1, 1000), help="Number of user turns.")
@click.option("--turn-mode", type=click.Choice(["server_vad", "semantic_vad", "manual"]),
              help="Who ends the user's turn: the server's VAD, or the client (commit).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a timeline.")
@click.option("--store", type=click.Path(dir_okay=False),
              help="Embedded store file to record into (default from config, else voicepulse.db).")
@click.option("--no-store", is_flag=True, help="Measure only; record nothing.")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="PEM CA/certificate to trust for wss:// (e.g. the simulator's --tls cert).")
def probe(target, config_path, url, model, provider, api_key_env, scenario, turns, turn_mode,
          as_json, store, no_store, ca_file) -> None:
    """Run one scripted voice session against TARGET and print what each step took.

    \b
    Exit status: 0 the probe succeeded, 1 it failed (the error class is printed),
    2 a usage or config error.

    \b
    Examples:
      voicepulse probe sim-fast
      voicepulse probe --url ws://127.0.0.1:8765/v1/realtime --model sim-slow --turns 3
      voicepulse probe gpt-realtime --config voicepulse.yaml --json
    """
    import dataclasses

    from probes.session import run_session
    from voicepulse import config as cfgmod
    from voicepulse.render import probe_document, probe_timeline

    cfg = load_or_default(config_path)
    try:
        if url:
            if not model:
                raise ConfigErrorExit("--url needs --model")
            tgt = cfgmod.sim_target(model, url)
            # steering markers only for a simulator on this machine, never a remote provider
            tgt = dataclasses.replace(tgt, name=target or model, provider=provider or "openai",
                                      api_key_env=api_key_env or tgt.api_key_env,
                                      simulator_hints=cfgmod.is_loopback(url))
        else:
            name = target or next(iter(cfg.targets), None)
            if name is None:
                raise ConfigErrorExit(f"{cfg.file}: targets: no target configured; name one or use --url")
            tgt = cfg.target(name)
            if provider:
                tgt = dataclasses.replace(tgt, provider=provider)
            if api_key_env:
                tgt = dataclasses.replace(tgt, api_key_env=api_key_env)
        sc = cfg.scenario(scenario)
        cfgmod.check_playable(tgt, sc, "probe", cfg.file)
    except ConfigError as exc:
        raise ConfigErrorExit(str(exc)) from None
    try:
        cfgmod.require_env(cfg, [] if url else [tgt])
        if url:
            cfgmod.require_key(tgt, "--api-key-env", "")
    except ConfigError as exc:
        raise ConfigErrorExit(str(exc)) from None
    if ca_file:
        tgt = dataclasses.replace(tgt, ca_file=ca_file)
    if sc.script is not None and turns:
        raise ConfigErrorExit(f"--turns does not apply to the scripted scenario {sc.name} "
                              "(its steps decide the turns)")
    if turns:
        sc = dataclasses.replace(sc, turns=turns)
    if turn_mode:
        sc = dataclasses.replace(sc, turn_mode=turn_mode)

    result = run_session(tgt, sc, kind="probe")
    if not no_store:
        record_results(cfg, [result], store)
    if as_json:
        click.echo(orjson.dumps(probe_document(result), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(probe_timeline(result))
    sys.exit(0 if result.ok else 1)


def record_results(cfg, results, store: str | None = None) -> None:
    """Write results through telemetry to the configured sinks (embedded store by default)."""
    recorder = telemetry_for(cfg, store).recorder()
    try:
        for r in results:
            recorder.record(r)
    finally:
        recorder.close(timeout=10.0)


# -- demo ------------------------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.option("--duration", default="50s", show_default=True,
              help="How long the probe service runs (a regression is injected half way).")
@click.option("--load", "load_duration", default="10s", show_default=True,
              help="How long the open-model load run lasts afterwards.")
@click.option("--report", "report_path", default="voicepulse-demo.html", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the HTML report.")
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="Embedded store file (default voicepulse.db).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Use this config's sinks (e.g. InfluxDB) instead of the embedded store.")
def demo(duration, load_duration, report_path, store, config_path) -> None:
    """Run the whole pipeline on embedded defaults, in about a minute.

    \b
    1. start the reference simulator: OpenAI Realtime with two profiles (sim-fast, sim-slow),
       a Gemini Live (gemini-sim) and a GPT-Live endpoint (gpt-live-sim);
    2. run the probe service against all four, with SLO burn-rate and regression alert rules,
       and make sim-fast's TTFA twice as long half way through;
    3. run a short open-model load test against sim-slow;
    4-5. print the probe summary and the alerts that fired;
    6. play two voice scenarios against sim-fast (scenarios/): a support call with a tool
       lookup, and a caller who talks over the answer (barge-in);
    7. write an HTML report.
    """
    from voicepulse.demo import run_demo

    try:
        seconds, load_s = parse_duration(duration), parse_duration(load_duration)
    except ValueError:
        raise ConfigErrorExit("--duration/--load: expected a duration like 30s") from None
    cfg = load_or_default(config_path)
    sys.exit(run_demo(cfg, seconds=seconds, store=store, load_s=load_s, report=report_path))


# -- commands owned by other parts -----------------------------------------------------------
# Imported like any module: one that is broken stops the CLI with its error, never makes its
# command silently vanish.
main.add_command(sim_main, "sim")
for _command in (serve, alerts, load, report, results, status):
    main.add_command(_command)


if __name__ == "__main__":
    main()
