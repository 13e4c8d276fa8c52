"""Period estimation, the ensemble detector, and a short accuracy run on the real labelled data."""
from __future__ import annotations

import numpy as np
import pytest

from tsanomaly import RollingZScoreDetector
from tsanomaly.cli import main
from tsanomaly.detectors.ensemble import EnsembleDetector
from tsanomaly.evaluation import evaluate, format_markdown, score_series
from tsanomaly.periods import estimate_period


@pytest.mark.parametrize("period", [7, 24, 50, 113])
def test_estimate_period_finds_the_cycle(period):
    rng = np.random.default_rng(period)
    t = np.arange(40 * period)
    x = np.sin(2 * np.pi * t / period) + 0.5 * np.sin(4 * np.pi * t / period) + 0.2 * rng.normal(size=t.size)
    x[rng.choice(t.size, 20)] = np.nan
    assert abs(estimate_period(x) - period) <= max(1, period // 50)


def test_estimate_period_of_noise_is_the_default():
    x = np.random.default_rng(0).normal(size=3000)
    assert estimate_period(x, default=17) == 17


def test_rank_ensemble_of_identical_members_is_the_members_cdf():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 600))
    member = RollingZScoreDetector(window=10, seasonal_period=None)
    single = EnsembleDetector(detectors=[member]).fit(x[:, :400])
    double = EnsembleDetector(detectors=[member, member]).fit(x[:, :400])
    np.testing.assert_allclose(single.score(x[:, 400:]).values, double.score(x[:, 400:]).values)
    scores = single.score(x[:, 400:]).values
    assert np.nanmin(scores) >= 0.0 and np.nanmax(scores) <= 1.0
    raw = member.fit(x[:, :400]).score(x[:, 400:]).values
    finite = np.isfinite(raw)
    # A monotone map of the member's score: the order of points is kept.
    order = np.argsort(raw[finite], kind="stable")
    assert np.all(np.diff(scores[finite][order]) >= -1e-12)


def test_zmean_ensemble_and_bad_combine():
    x = np.random.default_rng(2).normal(size=(2, 300))
    det = EnsembleDetector(detectors=[RollingZScoreDetector(window=6, seasonal_period=None)], combine="zmean").fit(x)
    assert np.isfinite(det.score(np.random.default_rng(3).normal(size=(2, 50))).values).any()
    with pytest.raises(ValueError, match="combine"):
        EnsembleDetector(combine="max").fit(x)


def test_short_accuracy_run_on_real_data(shared_data):
    from tsanomaly.datasets import read_nab, read_ucr

    ucr = read_ucr(shared_data / "ucr", limit=2)
    nab = [r for r in read_nab(shared_data / "nab") if r.windows][:2]
    for records, dataset, metric in ((ucr, "ucr", "top1_accuracy"), (nab, "nab", "nab_standard")):
        result = evaluate(records, dataset, detectors=["baseline"], progress=False)
        assert list(result.summary["detector"]) == ["baseline"]
        assert result.summary["files"].iloc[0] == 2
        assert 0.0 <= result.summary["auc_roc"].iloc[0] <= 1.0
        assert np.isfinite(result.summary[metric].iloc[0])
        assert "| baseline | 2 |" in format_markdown([result], "cmd")
    scored = score_series(ucr[0], "baseline")
    assert np.isnan(scored.scores[: ucr[0].train_end]).all()
    assert np.isfinite(scored.scores[ucr[0].train_end :]).any()


def test_evaluate_cli_reports_a_missing_folder(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path), "--detectors", "baseline"]) == 2
    assert "data folder" in capsys.readouterr().err
