"""The outbox's acknowledgement journal (telemetry/outbox.py, `VOICEPULSE_OUTBOX_JOURNAL`): each
accepted line is appended to `<folder>/<name>.<pid>.lp` once, in order; unset, nothing is."""

from __future__ import annotations

import os

from telemetry.outbox import JOURNAL_ENV, Outbox, SendResult
from telemetry.points import build_point, to_line


class Accepting:
    def __init__(self):
        self.bodies: list[bytes] = []

    def send(self, body: bytes) -> SendResult:
        self.bodies.append(body)
        return SendResult("ok", 204)


def points(n: int, t0: int = 1_700_000_000_000_000_000):
    return [build_point("schedule", {"target": "t", "event": "run"}, {"runs": 1}, t0 + i)
            for i in range(n)]


def test_journal_holds_every_acknowledged_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(JOURNAL_ENV, str(tmp_path / "journal"))
    sent = Accepting()
    box = Outbox(str(tmp_path / "o.sqlite"), sent, name="sink")
    box.write(points(3))
    box.write(points(2, t0=5))
    assert box.close(timeout=5)
    got = (tmp_path / "journal" / f"sink.{os.getpid()}.lp").read_text().splitlines()
    assert got == [to_line(p, "ns") for p in [*points(3), *points(2, t0=5)]]
    assert b"\n".join(sent.bodies).decode().splitlines() == got  # what was delivered


def test_no_journal_unless_asked(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    box = Outbox(str(tmp_path / "o.sqlite"), Accepting(), name="sink")
    box.write(points(2))
    assert box.close(timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sqlite"]
