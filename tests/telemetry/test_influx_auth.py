"""One auth for the InfluxDB writer and reader (telemetry/influx.py): the same headers from the
same config, and an unset secret variable stops both, naming the key and the variable (the
reader used to send no auth at all and read an empty store)."""

import base64

import pytest

from telemetry.influx import InfluxV1Sink, InfluxV2Sink, auth_headers
from telemetry.query import open_query
from telemetry.transports import transport_for

URL = "http://127.0.0.1:9"


@pytest.mark.parametrize("cfg", [
    InfluxV1Sink(url=URL, database="d", token_env="VP_TEST_UNSET_TOKEN"),
    InfluxV1Sink(url=URL, database="d", username_env="VP_TEST_UNSET_USER"),
    InfluxV2Sink(url=URL, org="o", bucket="b", token_env="VP_TEST_UNSET_TOKEN"),
])
@pytest.mark.parametrize("make", [transport_for, lambda c: open_query(influx=c)],
                         ids=["writer", "reader"])
def test_unset_secret_stops_writer_and_reader_alike(monkeypatch, cfg, make):
    for var in ("VP_TEST_UNSET_TOKEN", "VP_TEST_UNSET_USER"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=r"(token|username)_env: environment variable "
                                         r"VP_TEST_UNSET_(TOKEN|USER) is not set"):
        make(cfg)


def test_writer_and_reader_send_the_same_auth(monkeypatch):
    monkeypatch.setenv("VP_TEST_USER", "ann")
    monkeypatch.setenv("VP_TEST_PASS", "s3cret-canary")
    cfg = InfluxV1Sink(url=URL, database="d", username_env="VP_TEST_USER",
                       password_env="VP_TEST_PASS")
    want = "Basic " + base64.b64encode(b"ann:s3cret-canary").decode()
    assert auth_headers(cfg) == {"Authorization": want}
    assert transport_for(cfg)._headers["Authorization"] == want
    assert open_query(influx=cfg)._headers == {"Authorization": want}


def test_a_token_wins_over_basic_and_v2_uses_it(monkeypatch):
    monkeypatch.setenv("VP_TEST_TOKEN", "tok-canary")
    monkeypatch.setenv("VP_TEST_USER", "ann")
    v1 = InfluxV1Sink(url=URL, database="d", token_env="VP_TEST_TOKEN", username_env="VP_TEST_USER")
    v2 = InfluxV2Sink(url=URL, org="o", bucket="b", token_env="VP_TEST_TOKEN")
    assert auth_headers(v1) == auth_headers(v2) == {"Authorization": "Token tok-canary"}
    assert open_query(influx=v2)._headers == {"Authorization": "Token tok-canary"}


def test_no_secret_configured_sends_no_auth():
    assert auth_headers(InfluxV1Sink(url=URL, database="d")) == {}
    assert auth_headers(InfluxV2Sink(url=URL, org="o", bucket="b")) == {}
