"""docker-compose.yml without a Docker engine: valid against the Compose Specification schema,
everything it mounts or builds from exists, only Grafana's port is published, and every
credential is taken from .env.

compose-spec.json beside this file is the Compose Specification's JSON Schema (draft-07), copied
from compose-spec/compose-spec schema/compose-spec.json at commit 170098ba07d9 (June 2026),
Apache License 2.0: shipped here so the check never depends on anything outside the repo."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_validates_against_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_the_schema_check_rejects_a_broken_file():
    schema = json.loads(SCHEMA.read_text())
    bad = {"services": {"x": {"image": "a", "ports": "8080", "restart": "sometimes",
                              "bogus_key": 1}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))


def _bind_sources(svc: dict) -> list[str]:
    out = []
    for v in svc.get("volumes", []):
        src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith(("./", "../", "/")):
            out.append(src)
    return out


def test_every_mount_and_build_context_exists():
    checked = 0
    for name, svc in SERVICES.items():
        for src in _bind_sources(svc):
            assert (ROOT / src).exists(), f"{name}: mounts {src}, which is not in the repo"
            checked += 1
        build = svc.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (ROOT / ctx / dockerfile).is_file(), f"{name}: no {dockerfile} in {ctx}"
            checked += 1
    assert checked >= 6


def test_dockerfile_copies_only_what_exists():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored


def test_only_grafana_publishes_a_port():
    published = {n for n, s in SERVICES.items() if s.get("ports")}
    assert published == {"grafana"}
    (port,) = SERVICES["grafana"]["ports"]
    assert port.endswith(":3000") and "${GRAFANA_BIND" in port


def test_every_credential_comes_from_env():
    text = (ROOT / "docker-compose.yml").read_text()
    secret_keys = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEY|WEBHOOK)", re.I)
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        for k, v in env.items():
            if secret_keys.search(k):
                assert isinstance(v, str) and v.startswith("${"), f"{name}.{k} is not from .env"
    example = (ROOT / ".env.example").read_text()
    for var in set(re.findall(r"\$\{(\w+)", text)):
        assert re.search(rf"^{var}=", example, re.M), f"{var} is used but not in .env.example"
    # .env.example carries no real secret: the token is left empty for the user to make
    assert re.search(r"^INFLUX_TOKEN=$", example, re.M)
    for line in example.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^#\s]*", line), f"not a plain KEY=value: {line!r}"


def test_services_of_the_stack():
    assert {"influxdb", "grafana", "probe", "sim", "locust-master", "worker"} <= set(SERVICES)
    infl = SERVICES["influxdb"]
    assert infl["image"].startswith("influxdb:2")
    assert infl["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert SERVICES["sim"]["command"][:3] == ["sim", "--host", "0.0.0.0"]
    assert SERVICES["probe"]["command"][0] == "serve"
    assert "--worker" in SERVICES["worker"]["command"] and "--master" in SERVICES["locust-master"]["command"]
    assert "container_name" not in SERVICES["worker"]  # --scale worker=N needs no fixed name
    mounts = {m.split(":")[1] for m in SERVICES["grafana"]["volumes"] if m.startswith("./")}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards",
            "/etc/grafana/provisioning/alerting", "/var/lib/grafana/dashboards"} <= mounts


def test_example_config_is_valid():
    """The config the probe service mounts passes `voicepulse config check`."""
    from voicepulse.config import load_config

    cfg = load_config(ROOT / "deploy" / "voicepulse.yaml")
    assert set(cfg.targets) == {"sim-fast", "sim-slow"}
    assert all(t.url.startswith("ws://sim:8765/") for t in cfg.targets.values())
    assert cfg.sinks and cfg.service is not None and cfg.service.probes


@pytest.mark.parametrize("service", ["probe", "locust-master", "worker"])
def test_example_config_loads_with_the_containers_mounts(service, tmp_path):
    """Rebuild the container's filesystem from the service's bind mounts (copies, so `..` cannot
    escape to the checkout) and load the config there: every scenario file it names is mounted."""
    from voicepulse.config import load_config

    svc = SERVICES[service]
    for v in svc.get("volumes", COMPOSE["x-voicepulse"]["volumes"]):
        src, dst = v.split(":")[:2]
        if src.startswith("./"):
            shutil.copytree(ROOT / src, tmp_path / dst.lstrip("/"))
    cfg = load_config(tmp_path / "etc" / "voicepulse" / "voicepulse.yaml")
    assert any(sc.script is not None for sc in cfg.scenarios.values())


def test_dockerfile_installs_every_package():
    """`pip install .` in the image only packages what was copied in."""
    text = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", text).group(1)
    packages = [p.strip(' "*') for p in include.split(",")]
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert packages and set(packages) <= copied, set(packages) - copied


def _compose_default(arg: str) -> str:
    """`${VAR:-default}` as compose would expand it with nothing set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg)


@pytest.mark.parametrize("service", ["sim", "probe", "locust-master", "worker"])
def test_service_commands_parse_with_the_real_cli(service):
    """Each service's command line is accepted by the `voicepulse` CLI's own parser (options
    exist, values have the right types), without running anything."""
    from voicepulse.cli import main

    args = [_compose_default(a) for a in SERVICES[service]["command"]]
    ctx = main.make_context("voicepulse", list(args))
    sub = main.get_command(ctx, args[0])
    assert sub is not None, f"voicepulse has no {args[0]!r} command"
    sub_ctx = sub.make_context(args[0], args[1:])
    assert sub_ctx.params  # parsed
    if service == "locust-master":
        assert sub_ctx.params["master"] and sub_ctx.params["processes"] == 1
    if service == "worker":
        assert sub_ctx.params["worker"] and sub_ctx.params["master_host"] == "locust-master"


def test_a_wrong_option_is_caught_by_the_cli_parse():
    import click

    from voicepulse.cli import main

    ctx = main.make_context("voicepulse", ["load", "--no-such-option"])
    with pytest.raises(click.UsageError):
        main.get_command(ctx, "load").make_context("load", ["--no-such-option"])


@pytest.mark.slow
def test_example_config_probes_the_simulator(sim):
    """The stack's example targets and scenario complete a real session against the simulator
    (only the host differs: `sim` in the compose network, loopback here)."""
    import dataclasses

    from probes.session import run_session
    from voicepulse.config import load_config

    cfg = load_config(ROOT / "deploy" / "voicepulse.yaml")
    tgt = cfg.targets["sim-fast"]
    local = dataclasses.replace(tgt, url=tgt.url.replace("ws://sim:8765", sim.ws_url))
    result = run_session(local, cfg.scenario("default"), api_key="k")
    assert result.outcome == "ok", result.error
    assert len(result.turns) == cfg.scenario("default").turns and result.turns[0].ttfa_ms > 0
