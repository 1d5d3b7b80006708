"""voicepulse.wiring: the config a command reads and the telemetry built from it, the same for
every command (a --store option means that embedded store, for writing and reading alike)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from tests.telemetry.helpers import make_result
from voicepulse.cli import main, record_results
from voicepulse.config import load_config
from voicepulse.errors import ConfigErrorExit
from voicepulse.wiring import load_or_default, telemetry_for

INFLUX_CONFIG = """
targets:
  sim-fast: {{url: "ws://127.0.0.1:8765/v1/realtime", model: sim-fast}}
sinks:
  - {{type: influx, api: v1, url: "http://127.0.0.1:9", database: vp}}
store: {store}
outbox: {outbox}
"""


@pytest.fixture
def influx_config(tmp_path):
    path = tmp_path / "voicepulse.yaml"
    path.write_text(INFLUX_CONFIG.format(store=tmp_path / "cfg.db", outbox=tmp_path / "ob"))
    return load_config(path)


def test_the_config_names_the_destination(influx_config, tmp_path):
    tel = telemetry_for(influx_config)
    assert [s.database for s in tel.sinks] == ["vp"]
    assert (tel.store, tel.outbox) == (str(tmp_path / "cfg.db"), str(tmp_path / "ob"))


def test_store_overrides_the_sinks(influx_config, tmp_path):
    tel = telemetry_for(influx_config, str(tmp_path / "mine.db"))
    assert tel.sinks == () and tel.store == str(tmp_path / "mine.db")
    assert tel.where == f"the embedded store {tmp_path / 'mine.db'}"


def test_probe_results_with_store_land_where_results_reads_them(influx_config, tmp_path):
    """`probe --store` with an InfluxDB config used to write to InfluxDB while `results --store`
    read the file: now both use the file, and no outbox is opened."""
    store = tmp_path / "mine.db"
    record_results(influx_config, [make_result(i, started_at=time.time() - 60) for i in range(2)],
                   str(store))
    assert store.exists() and not (tmp_path / "ob").exists()
    out = CliRunner().invoke(main, ["results", "--config", influx_config.file,
                                    "--store", str(store), "--since", "1h"])
    assert out.exit_code == 0, out.output
    assert "sim-fast" in out.output and "100.0 %" in out.output


def test_load_or_default_picks_the_file_then_local_then_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_or_default(None).file == "(built-in defaults)"
    with pytest.raises(ConfigErrorExit, match="no config"):
        load_or_default(None, defaults=False)
    (tmp_path / "voicepulse.yaml").write_text("store: local.db\n")
    assert load_or_default(None).store == "local.db"
    other = tmp_path / "other.yaml"
    other.write_text("store: other.db\n")
    assert load_or_default(str(other)).store == "other.db"


def test_a_bad_config_exits_2_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: [1, 2]\n")
    with pytest.raises(ConfigErrorExit) as exc:
        load_or_default(str(bad))
    assert exc.value.exit_code == 2 and "bad.yaml" in str(exc.value) and "store" in str(exc.value)
