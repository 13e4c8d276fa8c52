"""The console script: the demo end to end, and one-line errors with exit status 2."""
from __future__ import annotations

from tsanomaly.cli import main


def test_demo_prints_alerts_and_precision_recall(capsys):
    status = main(["demo", "--detector", "baseline", "--contexts", "40", "--days", "28", "--top", "5"])
    out = capsys.readouterr().out
    assert status == 0
    assert "alerts" in out and "precision" in out and "recall" in out
    assert "credential_stuffing" in out


def test_unknown_detector_is_a_user_error(capsys):
    status = main(["demo", "--detector", "nope", "--contexts", "10"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "unknown detector 'nope'" in err
