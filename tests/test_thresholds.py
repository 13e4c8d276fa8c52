"""Threshold settings (thresholds.validate_threshold_params, calibrate) and alert post-processing:
one alert per incident (thresholds.suppress_repeats)."""
import doctest
import re
import warnings


import numpy as np
import pytest

from tsanomaly import thresholds
from tsanomaly.thresholds import calibrate, suppress_repeats, validate_threshold_params
from tsanomaly.validation import is_finite_real


def test_onsets_by_hand():
    scores = [1.0, 5.0, 6.0, 5.5, 2.0, 7.0, 7.0, 1.0, 0.5, 0.4]
    out = suppress_repeats(scores, refractory=3)
    # 5.5 and 2.0 are below the 6.0 before them; the second 7.0 ties the first; 1.0 and 0.5
    # are below 7.0 within 3 steps; 0.4 (step 9) looks back at steps 6..8 = 7.0, 1.0, 0.5: the
    # second 7.0 is exactly 3 steps back, still inside the window (the first, 4 back, is not).
    expected = [1.0, 5.0, 6.0, np.nan, np.nan, 7.0, np.nan, np.nan, np.nan, np.nan]
    np.testing.assert_array_equal(out, expected)
    # A longer look-back suppresses more; refractory=1 keeps every rise.
    np.testing.assert_array_equal(
        suppress_repeats(scores, refractory=1), [1.0, 5.0, 6.0, np.nan, np.nan, 7.0, np.nan, np.nan, np.nan, np.nan]
    )
    assert np.isfinite(suppress_repeats([3.0, 1.0, 2.0], refractory=1)).tolist() == [True, False, True]
    # The edge of the window: step 3 (the 2.0) looks back at steps 1..2 (1.0, 1.0) with
    # refractory=2, so it is an onset; with refractory=3 the window reaches step 0 (5.0).
    np.testing.assert_array_equal(suppress_repeats([5.0, 1.0, 1.0, 2.0], refractory=2), [5.0, np.nan, np.nan, 2.0])
    np.testing.assert_array_equal(suppress_repeats([5.0, 1.0, 1.0, 2.0], refractory=3), [5.0, np.nan, np.nan, np.nan])


def test_a_sustained_incident_alerts_once_at_any_threshold():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 500)
    scores[200:260] = 5.0  # a plateau of 60 steps
    onsets = suppress_repeats(scores, refractory=100)
    for threshold in (2.0, 4.0, 4.99):  # the flag rule is score > threshold (as BaseDetector.predict)
        alerts = np.flatnonzero(np.nan_to_num(onsets, nan=-np.inf) > threshold)
        assert alerts.tolist() == [200]


def test_nan_is_not_scored_and_rows_are_separate_contexts():
    scores = np.array([[np.nan, 1.0, np.nan, 0.5, 2.0, 2.0], [3.0, 1.0, 4.0, np.nan, 1.0, 5.0]])
    out = suppress_repeats(scores, refractory=2)
    np.testing.assert_array_equal(out[0], [np.nan, 1.0, np.nan, np.nan, 2.0, np.nan])
    np.testing.assert_array_equal(out[1], [3.0, np.nan, 4.0, np.nan, np.nan, 5.0])
    assert out.dtype == np.float64


@pytest.mark.parametrize("refractory", [0, -1, 2.5, True, "3"])
def test_bad_refractory_raises(refractory):
    with pytest.raises(ValueError, match="refractory"):
        suppress_repeats([1.0, 2.0], refractory)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="1-D or 2-D"):
        suppress_repeats(np.zeros((2, 2, 2)), 3)


def test_the_module_examples_run():
    result = doctest.testmod(thresholds)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------- threshold settings
@pytest.mark.parametrize("value", [3, 3.0, np.int64(3), np.float32(3.0), np.float64(3.0)])
def test_a_fixed_threshold_may_be_any_real_number(value):
    validate_threshold_params(value, 0.01, False)
    per_context, global_value = calibrate(np.zeros((2, 5)), threshold=value)
    assert global_value == 3.0 and per_context.tolist() == [3.0, 3.0]


@pytest.mark.parametrize("value", [True, np.bool_(True), None, np.nan, np.inf, "high", [3.0]])
def test_a_threshold_that_is_no_number_is_refused(value):
    with pytest.raises(ValueError, match="threshold must be one of"):
        validate_threshold_params(value, 0.01, False)


@pytest.mark.parametrize("value", [0.01, np.float32(0.01), np.float64(0.25)])
def test_contamination_may_be_any_real_number_in_range(value):
    validate_threshold_params("quantile", value, False)
    calibrate(np.arange(100.0)[None, :], contamination=value)


@pytest.mark.parametrize("value", ["0.01", None, True, np.bool_(True), np.nan, 0, 0.5, -0.1, [0.01]])
def test_contamination_that_cannot_be_calibrated_is_a_value_error(value):
    with pytest.raises(ValueError, match=r"contamination must be a number in \(0, 0.5\)"):
        validate_threshold_params("quantile", value, False)
    with pytest.raises(ValueError, match="contamination"):
        calibrate(np.arange(100.0)[None, :], contamination=value)


@pytest.mark.parametrize("threshold", ["quantile", "pot"])
@pytest.mark.parametrize("per_context", [False, True])
def test_calibrate_ignores_infinite_scores_and_leaves_the_input_as_it_was(threshold, per_context):
    """Infinite training scores count as unscored (as NaN do), and the caller's array is not
    written to: calibrate copies it only to replace them."""
    rng = np.random.default_rng(3)
    scores = rng.exponential(size=(4, 2000))
    scores[0, :5] = np.inf
    scores[1, 7] = -np.inf
    scores[2, :10] = np.nan
    given = scores.copy()
    got = thresholds.calibrate(scores, threshold, 0.001, per_context)
    np.testing.assert_array_equal(scores, given)
    as_nan = np.where(np.isinf(scores), np.nan, scores)
    expected = thresholds.calibrate(as_nan, threshold, 0.001, per_context)
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1] == expected[1] and np.isfinite(got[0]).all()


def test_suppress_repeats_takes_the_panel_that_score_gives():
    # The README applies suppress_repeats to det.score()'s output, a Panel: a TypeError.
    import pandas as pd

    from tsanomaly import Panel

    values = np.array([[1.0, 5.0, 6.0, 5.5, 2.0, 7.0], [np.nan, 2.0, 1.0, 3.0, 3.0, 0.5]])
    contexts = pd.Index(["a", "b"], name="asn")
    index = pd.date_range("2024-01-01", periods=6, freq="h")
    out = suppress_repeats(Panel(values, contexts, index), refractory=3)
    assert isinstance(out, Panel)
    assert out.contexts.equals(contexts) and out.index.equals(index)
    np.testing.assert_array_equal(out.to_numpy(), suppress_repeats(values, refractory=3))
    with pytest.raises(ValueError, match="refractory must be an integer >= 1"):
        suppress_repeats(Panel(values, contexts, index), refractory=0)


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**309])
def test_an_integer_too_large_for_a_float_is_refused_not_an_overflow(value):
    # math.isfinite(10**400) raised OverflowError: a traceback from --param contamination=1000...0.
    assert not is_finite_real(value)
    with pytest.raises(ValueError, match=r"contamination must be a number in \(0, 0.5\)"):
        validate_threshold_params("quantile", value, False)
    assert is_finite_real(10**300) and is_finite_real(np.int64(2**62))  # large but a float holds them


def test_per_context_pot_says_when_contexts_fall_back_to_the_quantile():
    # STL holds out 336 scores per context, fewer than the ~500 that ten excesses over the 0.98
    # quantile need: threshold="pot" was the quantile rule for every context, and nothing said so.
    scores = np.random.default_rng(0).exponential(1.0, (4, 336))
    with pytest.warns(RuntimeWarning, match=r"fell back to the quantile rule for 4 of 4 contexts .*median 336 "
                                            r"training scores.* about 500 scores"):
        own, _ = calibrate(scores, "pot", 0.001, per_context=True)
    assert np.array_equal(own, np.quantile(scores, 0.999, axis=1))
    long_enough = np.random.default_rng(0).exponential(1.0, (4, 2000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate(long_enough, "pot", 0.001, per_context=True)


@pytest.mark.parametrize("shape", [(100,), (2, 3, 100), ()])
def test_calibrate_refuses_scores_that_are_not_two_dimensional(shape):
    # A 1-D array was read as one score per context: calibrate(np.arange(100.0)) gave 100 thresholds.
    with pytest.raises(ValueError, match=rf"shape \(n_contexts, n_times\), got shape {re.escape(str(shape))}; "
                                         r"for the scores of one context pass scores\[None, :\]"):
        calibrate(np.zeros(shape))
    assert calibrate(np.arange(100.0)[None, :])[0].shape == (1,)


@pytest.mark.parametrize("rule", ["quantile", "pot"])
def test_per_context_says_how_many_contexts_got_the_global_threshold(rule):
    # Contexts with fewer than MIN_SCORES_PER_CONTEXT finite scores silently got the global threshold.
    scores = np.random.default_rng(0).exponential(1.0, (4, 2000))
    scores[0, 30:] = np.nan  # 30 finite scores
    scores[1] = np.nan  # none
    with pytest.warns(RuntimeWarning, match=rf"per_context=True \(threshold='{rule}'\) gave 2 of 4 contexts the "
                                            r"global threshold: they have fewer than 50 finite training scores "
                                            r"\(1 of them none\)") as record:
        own, global_value = calibrate(scores, rule, 0.001, per_context=True)
    assert len([w for w in record if "global threshold" in str(w.message)]) == 1
    assert own[0] == own[1] == global_value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate(scores[2:], rule, 0.001, per_context=True)  # every context has its own: no warning
        calibrate(scores, rule, 0.001, per_context=False)
