"""BaseDetector: the fit / score / predict / alerts / save / load API shared by every detector.

A subclass supplies the model — ``_fit`` (learn per-context state, return the
training scores) and ``_score`` (score new data from that state) — and the base
does everything else once: input checking, device choice, threshold
calibration, boolean flags, alert tables, persistence, and scikit-learn's
parameter protocol.  See ``docs/CONTRACT.md`` for the subclass contract.

Scores always point one way: **higher = more anomalous**, and they are
comparable across contexts, so one threshold can serve all of them.  A point
is flagged when its score is strictly above its context's calibrated
threshold (``score > threshold``): a context whose training scores are all
equal (a country that always has 0 events) calibrates a threshold equal to
that score, and the same score again must not alert.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import os
import warnings
import zipfile
import zlib

import numpy as np
import pandas as pd

from tsanomaly import backend, thresholds
from tsanomaly.panel import _DST_SHIFT, Panel, same_step, step_duration, steps_by_wall_clock
from tsanomaly.validation import is_int

__all__ = ["ALERT_COLUMNS", "BaseDetector", "CalibrationWarning", "HistoryGapWarning", "MIN_OBSERVED_SHARE",
           "NotFittedError", "check_column_names", "load", "min_observed", "MODEL_FORMAT", "steps_by_wall_clock"]

MODEL_FORMAT = "tsanomaly-model"
MODEL_FORMAT_VERSION = 1
#: Written instead of :data:`MODEL_FORMAT_VERSION` by a model whose job reads its inputs in a time
#: zone (``tsanomaly fit --tz``): code from before that option ignored the zone and read the local
#: times as UTC without a word (a phantom hour at the spring switch, other alerts), and it refuses
#: this version. Every other model keeps version 1, which both read alike.
MODEL_FORMAT_VERSION_ZONED = 2

# Detector classes that ``load`` may build, by qualified name. Filled by
# ``BaseDetector.__init_subclass__``: a model file can only name a registered
# BaseDetector subclass (tsanomaly's, or one already imported), never an
# arbitrary import path.
_DETECTOR_REGISTRY: dict[str, type] = {}

#: The columns :meth:`BaseDetector.alerts` writes after the context columns, in order; each
#: detector's ``explanation_columns`` follow (:meth:`BaseDetector.alert_columns` gives both).
#: The context columns keep the user's names, so none of them may take one of these names
#: (:func:`check_column_names`); the jobs add their own columns on top (``tsanomaly.jobs.output_columns``).
ALERT_COLUMNS = ("start", "end", "peak_time", "peak_score", "n_points", "threshold", "detector")

#: Share of a window's points that must be observed for a score computed over the window
#: (STL's rolling mean and spread, the LSTM's reconstruction of the window ending at a
#: point): one missing bucket must not blank a window's worth of scores after it, but a
#: window that saw only part of what it summarises is not compared with whole ones.
#: The measurements that chose it are in the two detectors' modules.
MIN_OBSERVED_SHARE = 0.875

#: What the detectors' methods take as data, as :func:`refuse_frame_or_path` words it.
_ACCEPTED = "a tsanomaly Panel or a NumPy/CuPy array of shape (n_contexts, n_times)"


def min_observed(window: int) -> int:
    """Fewest observed points a window of ``window`` points needs to be scored (:data:`MIN_OBSERVED_SHARE`)."""
    return math.ceil(MIN_OBSERVED_SHARE * int(window))


def check_column_names(columns: dict, added, table: str, fix: str, source: str | None = None) -> None:
    """Raise ValueError when a user's column has the name of a column tsanomaly adds to the same table.

    Output tables hold the user's own columns (the context columns, and in a
    scores file the time and value columns) under their names beside the
    columns tsanomaly computes; a shared name would give a table two columns
    of that name (Parquet refuses to write it, pandas to select it) or let the
    computed column overwrite the user's. The check runs before the work
    (before a fit, before scoring), so the error comes early and names the
    column, rather than as a traceback or a corrupted file at the end.

    Parameters
    ----------
    columns : dict
        ``{role: name or names}`` of the user's columns in that table, e.g.
        ``{"context column": ["country", "asn"], "value column": "failed_logins"}``;
        the role names the column in the message.
    added : sequence of str
        The columns tsanomaly writes in that table.
    table : str
        How the message names the table ("the alerts").
    fix : str
        What the user should do, ending the message ("rename it before building the Panel").
    source : str, optional
        Prefixed to the message (a file name).

    Raises
    ------
    ValueError
        Naming the first colliding column, the table and ``fix``.

    Examples
    --------
    >>> check_column_names({"context column": ["country"]}, ALERT_COLUMNS, "the alerts", "rename it")
    >>> check_column_names({"context column": ["start"]}, ALERT_COLUMNS, "the alerts", "rename it")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: context column 'start' has the name of a column that tsanomaly writes in the alerts, ...; rename it (...)
    """
    added = tuple(added)
    for role, names in columns.items():
        for name in [names] if isinstance(names, str) else names:
            if name in added:
                prefix = f"{source}: " if source else ""
                raise ValueError(
                    f"{prefix}{role} {name!r} has the name of a column that tsanomaly writes in {table}, which "
                    f"would then hold two columns {name!r} or lose yours; {fix} (the names tsanomaly writes "
                    f"there: {', '.join(added)})"
                )


class NotFittedError(ValueError, AttributeError):
    """Raised when a detector is used before ``fit`` (same bases as scikit-learn's)."""


class Unmatched:
    """A context label equal to no other label, itself included (object identity).

    A detector merged from no per-context rows (:func:`tsanomaly.spark.merge_state`) holds one
    placeholder row under such a label, so that every context it scores is unseen at fit. A
    saved model keeps the mark: after :func:`load` the label still matches nothing, not even a
    context named by its text.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no context>"


class HistoryGapWarning(UserWarning):
    """Emitted by ``score`` when the scored panel does not follow the fitted history at once.

    The steps between are unknown to the detector, which sees them as missing: a day
    scored a week after the fit, or each hour of a day scored in turn after one fit
    without :meth:`BaseDetector.update`, leaves windows and seasons that reach into the
    gap without a score. ``update(new)`` after ``score(new)`` moves the kept history on,
    so that the next batch follows it at once.
    """


_GAP_REMEDY = ("after scoring each batch, roll the detector forward over it with update(new) (or fit again on a "
               "recent history), or score the whole span since the fit at once")


def history_gap_message(what: str, skipped: int, fit_end, remedy: str = _GAP_REMEDY) -> str:
    """The text of a :class:`HistoryGapWarning`: ``what`` (``"the panel"``) starts ``skipped``
    steps after the step that follows the fitted history, which ends at ``fit_end``; ``remedy``
    says what to do (``tsanomaly.spark``, which has no update, names its own)."""
    return (
        f"{what} starts {skipped} step(s) after the step that follows the fitted history (which ends "
        f"at {fit_end}): the detector sees those steps as missing, and windows or seasons reaching "
        f"into them score NaN; {remedy}"
    )


def _warn_gap_after_fit(detector: "BaseDetector", panel: Panel) -> None:
    """A :class:`HistoryGapWarning` when ``panel`` starts more than one step after the fitted history."""
    if panel.n_times == 0:
        return
    steps = detector.steps_after_fit(panel)
    if steps > 1:
        warnings.warn(history_gap_message("the panel", steps - 1, detector.fit_end_), HistoryGapWarning, stacklevel=3)


class CalibrationWarning(UserWarning):
    """Emitted by ``fit`` when the calibrated threshold is infinite, so the detector can never alert.

    That happens when no training score is finite: the history is shorter than
    the detector needs to score a single point (its window, season or level
    window). ``fit`` still succeeds, so that a batch of short series can be
    fitted in one go, but an operator must not mistake the silence for "no
    anomaly".

    Also emitted where the threshold is calibrated but known to be too low:
    :class:`~tsanomaly.detectors.stl.STLDetector` on a history too short to
    hold any data out of its fit, calibrated on in-sample scores.
    """


class BaseDetector:
    """Shared API of tsanomaly's detectors.

    Subclasses implement ``_fit(values, panel) -> train_scores`` and
    ``_score(values, panel, rows) -> scores`` (arrays of shape
    ``(n_contexts, n_times)``, higher = more anomalous) and may implement
    ``_explain`` to add columns to :meth:`alerts` and ``_restore`` to rebuild
    non-array state after :func:`load`.

    Every detector takes, besides its own parameters:

    threshold : {"quantile", "pot"} or float, default "quantile"
        How the threshold is calibrated (see :mod:`tsanomaly.thresholds`);
        :meth:`predict` and :meth:`alerts` flag the scores strictly above it.
    contamination : float, default 0.001
        Expected share of anomalous training points (quantile rule) or target
        risk (POT).
    per_context : bool, default False
        Calibrate one threshold per context rather than one for all. A context
        with too few finite training scores (fewer than
        ``thresholds.MIN_SCORES_PER_CONTEXT``, none at all included) gets the
        global threshold, like a context unseen at fit.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the arithmetic runs; results agree across devices within the
        tolerance each detector states.
    """

    #: Parameters that say how scores are computed, not what was fitted: set_params may change
    #: them on a fitted detector without dropping its state (the LSTM adds its precision).
    _scoring_params: tuple[str, ...] = ("device",)
    #: Explanation columns this detector adds to its alerts (``_explain`` fills them). They are
    #: reserved like :data:`ALERT_COLUMNS` (see :meth:`alert_columns`), so list every one here.
    explanation_columns: tuple[str, ...] = ()
    #: Spark type of each explanation column (``"double"``, ``"bigint"``, ``"boolean"``,
    #: ``"timestamp"`` or ``"string"``); tsanomaly.spark needs the alert schema before any shard
    #: runs, and reads a column left out here off the alerts of a synthetic burst, which a
    #: detector may not flag.
    explanation_types: dict = {}

    @classmethod
    def alert_columns(cls) -> tuple[str, ...]:
        """The columns :meth:`alerts` writes after the context columns.

        Returns
        -------
        tuple of str
            :data:`ALERT_COLUMNS`, then the detector's ``explanation_columns``;
            no context column may have one of these names.
        """
        return ALERT_COLUMNS + tuple(cls.explanation_columns)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _DETECTOR_REGISTRY[f"{cls.__module__}.{cls.__qualname__}"] = cls

    # ------------------------------------------------------------------ scikit-learn protocol
    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters and their values (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> "BaseDetector":
        """Set constructor parameters; unknown names raise ValueError. Returns self.

        Changing a parameter on a fitted detector drops its fitted state, so that ``score``
        asks for a new ``fit`` (NotFittedError), except those of :attr:`_scoring_params` (the
        device, which moves the fitted state there as ``load(..., device=)`` does): the detectors read
        their parameters when scoring, and a window, threshold rule or combination set after
        the fit scored with state fitted for the old one (an ensemble set to ``combine="rank"``
        kept a threshold that rank scores can never exceed).
        """
        valid = self._get_param_names()
        for name in params:
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; valid: {valid}")
        changed = [name for name, value in params.items()
                   if name not in self._scoring_params and not _same_value(getattr(self, name), value)]
        if changed and hasattr(self, "contexts_"):
            for name in [name for name in vars(self) if name not in valid]:
                delattr(self, name)
        elif "device" in params and hasattr(self, "contexts_") and not _same_value(self.device, params["device"]):
            # The fitted state moves to the new device, as load(..., device=) moves it: scoring runs
            # where device_ says, which only fit and load set, so a device set on a fitted detector
            # was ignored (device="cuda" without a GPU scored on the CPU, without a word).
            arrays = {}
            meta = _encode_detector(self, "", arrays)
            moved = _decode_detector(meta, arrays, params["device"])  # GPUUnavailableError without a GPU
            self.__dict__.update(vars(moved))
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
        }
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same_value(defaults.get(name, inspect.Parameter.empty), value)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):  # pragma: no cover - only consulted by scikit-learn utilities
        from sklearn.utils import Tags

        return Tags(estimator_type=None, target_tags=None, transformer_tags=None)

    # ------------------------------------------------------------------ fitting
    def fit(self, panel) -> "BaseDetector":
        """Learn each context's normal behaviour from history.

        Parameters
        ----------
        panel : Panel or array_like, shape (n_contexts, n_times)
            History; arrays are wrapped with :meth:`Panel.from_array`.

        Returns
        -------
        self

        Warns
        -----
        CalibrationWarning
            When no training score is finite (the history is too short for the
            detector's window): the threshold is then ``inf`` and nothing can alert.
        """
        self._fit_and_calibrate(_as_panel(panel))
        return self

    def fit_score(self, panel) -> Panel:
        """Fit on ``panel`` and return its training scores, those the threshold was calibrated on.

        Parameters
        ----------
        panel : Panel or array_like, shape (n_contexts, n_times)
            History, as for :meth:`fit`.

        Returns
        -------
        Panel
            Same contexts and times as ``panel``, but not every point is scored: the
            threshold must be calibrated on scores like those of new data, so a point is
            scored only as :meth:`score` would score it from the data before it, and is
            NaN where that is too little, as well as where it is missing. The baseline
            scores a point from ``min_periods`` past points at its phase on (with the
            defaults, hourly: from the 8th day); the matrix profile a window with
            ``min_history`` points of past before it; STL only its held-out blocks, the
            last ``holdout_folds x holdout_seasons`` cycles (fewer on a short history), each
            scored from a fit on what precedes it, since its in-sample remainders are smaller
            than the scores of new data (with the defaults, of 18 hourly days only the last 7
            are scored: 61% NaN); an ensemble the points any member scores.
            :meth:`min_fit_times` is the shortest history that scores any point.
        """
        panel = _as_panel(panel)
        train_scores = self._fit_and_calibrate(panel)
        return panel.with_values(train_scores)

    def prepare_fit(self, panel: Panel, device: str | None = None) -> Panel:
        """Check the threshold settings and set the state every fit starts from; returns the panel on the device.

        Sets ``device_`` (``device`` when given, else resolved from the ``device``
        parameter), ``contexts_``, ``n_fit_times_``, ``freq_`` and ``fit_end_``. The
        returned panel's values are float64 (a boolean panel's are converted).
        :meth:`fit` calls it before ``_fit``; so does :mod:`tsanomaly.spark` before
        the two-step fit hooks.
        """
        thresholds.validate_threshold_params(self.threshold, self.contamination, self.per_context)
        if panel.n_times == 0 or panel.n_contexts == 0:
            raise ValueError(f"cannot fit on an empty panel of shape {panel.shape}")
        self.device_ = backend.resolve_device(self.device) if device is None else device
        # Also here, not only in fit's _as_panel: tsanomaly.spark calls this hook with its own Panels.
        panel = _float_panel(panel).to(self.device_)
        self.contexts_ = panel.contexts
        self.n_fit_times_ = int(panel.n_times)
        self.freq_, self.fit_end_ = _grid_description(panel.index)
        return panel

    @contextlib.contextmanager
    def _unchanged_on_failure(self):
        """Restore every attribute if the block raises: a fit or update that fails leaves the
        detector as it was. Shallow: the block must assign new objects, not change them in place."""
        before = dict(vars(self))
        try:
            yield
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    def _fit_and_calibrate(self, panel: Panel):
        # A fit that fails leaves the detector as it was. prepare_fit sets the contexts and the
        # grid before _fit runs: a refit that failed (a history too short, the contexts in
        # another order) left the old model's per-context state under the new model's contexts,
        # and score() looked up each context's state in another context's row.
        with self._unchanged_on_failure():
            panel = self.prepare_fit(panel)
            train_scores = self._fit(panel.values, panel)
            self.threshold_, self.global_threshold_ = thresholds.calibrate(
                train_scores, self.threshold, self.contamination, self.per_context
            )
        self.warn_if_uncalibrated(stacklevel=4)
        return train_scores

    def warn_if_uncalibrated(self, stacklevel: int = 2) -> None:
        """Emit a :class:`CalibrationWarning` when the fitted global threshold is not finite.

        :func:`tsanomaly.thresholds.calibrate` returns ``inf`` when no training
        score is finite; every threshold is then ``inf`` (per-context ones fall
        back to the global one) and no score can ever be above it. ``fit`` does
        not raise, since the evaluation code fits many short files on purpose,
        but the silence must not pass unnoticed. Code that calibrates outside
        ``fit`` (a distributed fit) calls this after setting ``global_threshold_``.
        """
        if np.isfinite(self.global_threshold_):
            return
        warnings.warn(
            f"{type(self).__name__}: no training score was finite on a history of {self.n_fit_times_} "
            f"time steps ({len(self.contexts_)} contexts), so the calibrated threshold is "
            f"{self.global_threshold_} and nothing can alert; fit on a longer history or use a "
            "shorter window",
            CalibrationWarning,
            stacklevel=stacklevel,
        )

    def min_fit_times(self) -> int | None:
        """Fewest time steps a history needs for a fully observed context to get a finite training score.

        Shorter histories give no finite training score at all, hence an infinite
        threshold (see :meth:`warn_if_uncalibrated`); a job checks this before it
        fits (:func:`tsanomaly.jobs.fit_file`), instead of learning it after a long
        fit. ``None`` where the detector does not state it (the base); the check
        after the fit still applies. Raises ValueError on invalid parameters.
        Where :attr:`_fit_raises_when_short` is set, ``fit`` raises ValueError on a
        shorter history instead of giving it no finite score.
        """
        return None

    #: True where ``fit`` raises ValueError on a history shorter than :meth:`min_fit_times`
    #: (STL, the LSTM), False where it fits and scores nothing (an ensemble, which fits every
    #: member, tells the two apart).
    _fit_raises_when_short = False

    def _fit(self, values, panel: Panel):  # pragma: no cover - abstract
        raise NotImplementedError

    def _threshold_settings_in_scores(self) -> tuple:
        """Which of ``threshold``, ``contamination`` and ``per_context`` the scores depend on, not only
        the threshold; the base: none. An ensemble, which calibrates its own threshold on its members'
        scores, warns that it ignores a member's other settings (EnsembleDetector)."""
        return ()

    def _score(self, values, panel: Panel, rows: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def _explain(self, panel: Panel, scores: np.ndarray, ctx_rows: np.ndarray, peak_pos: np.ndarray) -> dict:
        """Explanation columns for alerts; the base adds none."""
        return {}

    def _restore(self) -> None:
        """Rebuild non-array state after :func:`load`; the base has none."""

    def _fitted_state_kinds(self) -> dict:
        """The detector's own fitted attributes (those ``_fit`` sets) and what each must be, ``{name: kind}``.

        A kind is one of ``"int"``, ``"int_list"`` (positive integers), ``"dict"``,
        ``"index"``, ``"array"`` (numeric, any shape), ``"arrays"`` (a dict of numeric
        arrays), ``"detectors"`` (a list of detectors); or a numeric array with one
        row per context: ``"vector"`` (1-d), ``"matrix"`` (2-d), ``"matrices"`` (a dict
        of 2-d arrays); or ``(that kind, rows)`` for another row count: an int, or the
        name of an attribute listed before, whose value (an int) or length counts the
        rows. Default: none (the base's own attributes are checked apart, at load).
        """
        return {}

    def _check_fitted_state(self) -> None:
        """ValueError naming the attribute unless each one of :meth:`_fitted_state_kinds` is of its kind.

        :func:`load` runs it after checking the base's state and before ``_restore``,
        so that a damaged model file fails there rather than at scoring, with a
        TypeError or IndexError far from its cause.
        """
        for name, kind in self._fitted_state_kinds().items():
            _check_state_kind(self, name, kind)

    # ------------------------------------------------------------------ scoring
    def check_fitted(self, method: str | None = None) -> None:
        """Raise NotFittedError unless ``fit`` has run.

        ``method`` names the method the caller was asked for (``"save"``), so that the
        message says what needs the fit: ``call fit(history) before save()``.
        """
        if not hasattr(self, "contexts_"):
            what = f"before {method}()" if method else "first"
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit(history) {what}.")

    def context_rows(self, panel: Panel) -> np.ndarray:
        """Row of the fitted per-context state for each context of ``panel``; -1 where unseen at fit.

        A level (context column) whose labels are all text on one side, the fitted
        or the panel's, and not on the other (numbers, categories), is matched by
        their text under :func:`tsanomaly.io.labels_as_text`, the rule of the
        scoring jobs: a model fitted by ``tsanomaly fit`` (labels read as text,
        ``"13335"``) scores a panel built by ``Panel.from_frame`` from a Parquet
        file of integers (``13335``), and a model fitted on those integers scores
        a panel whose labels were read as text.

        Raises
        ------
        ValueError
            When the panel's contexts have another number of levels than the fitted
            ones, or other level names (where both are named): no context would
            match, and every one would be scored as unseen, without an alert.
        """
        self.check_fitted("context_rows")
        fitted, new = self.contexts_, panel.contexts
        named = all(name is not None for name in list(fitted.names) + list(new.names))
        if fitted.nlevels != new.nlevels or (named and list(fitted.names) != list(new.names)):
            raise ValueError(
                f"the panel's contexts have levels {list(new.names)} but the detector was fitted on contexts "
                f"with levels {list(fitted.names)}; build the panel from the same context columns, in the same order"
            )
        fitted, new = _comparable_labels(fitted, new, self._fitted_contexts_as_text)
        return np.asarray(fitted.get_indexer(new), dtype=np.int64)

    def _fitted_contexts_as_text(self, convert: tuple) -> pd.Index:
        """``contexts_`` with the levels flagged in ``convert`` as text, kept for the next call.

        Kept in a private attribute, which neither ``save`` (fitted state ends with ``_``) nor a
        refit (a new ``contexts_`` object) reuses.
        """
        cached = getattr(self, "_contexts_as_text", None)
        if cached is None or cached[0] is not self.contexts_ or cached[1] != convert:
            cached = (self.contexts_, convert, _levels_as_text(self.contexts_, convert))
            self._contexts_as_text = cached
        return cached[2]

    def unseen_contexts(self, panel) -> pd.Index:
        """Contexts of ``panel`` that were not in the fitted history (scored NaN or from a cold start)."""
        self.check_fitted("unseen_contexts")
        panel = _as_panel(panel, after=self)
        return panel.contexts[self.context_rows(panel) < 0]

    def steps_after_fit(self, panel: Panel, require_new: bool = False) -> int:
        """Grid steps from the last fitted time to ``panel``'s first time (1 = it follows at once).

        Raises ValueError when the panel's grid differs from the fitted one
        (another step, compared by :func:`tsanomaly.panel.same_step` so that one grid
        written two ways, ``"D"`` and ``"24h"``, is one; or times that fall between the
        fitted grid's points),
        and, with ``require_new``, when the panel does not start after the fitted history.
        """
        self.check_fitted("steps_after_fit")
        steps = self._steps_after_fit(panel)
        if require_new and steps < 1:
            raise ValueError(
                f"new data must start after the fitted history, which ends at {self.fit_end_}; "
                f"it starts at {panel.index[0]}"
            )
        return steps

    def _steps_after_fit(self, panel: Panel) -> int:
        freq, _ = _grid_description(panel.index)
        # Compared as steps, not as text: one grid has several names ('D', '24h'; 'W-SUN', '168h').
        if not same_step(freq, self.freq_, zoned=getattr(panel.index, "tz", None) is not None):
            def grid(step):
                return f"frequency {step!r}" if step is not None else "a RangeIndex (integer positions, no timestamps)"
            raise ValueError(f"the panel's time grid has {grid(freq)} but the detector was fitted on {grid(self.freq_)}")
        if len(panel.index) == 0:
            return 1
        if isinstance(panel.index, pd.RangeIndex):
            # freq_ is None here (checked above): the detector was fitted on a RangeIndex too.
            return int(panel.index[0]) - int(self.fit_end_)
        if not isinstance(panel.index, pd.DatetimeIndex) or self.freq_ is None:
            # Panel's constructor gives every DatetimeIndex a freq; a grid without a step
            # cannot be counted in steps (and a timestamp is no integer position).
            fitted = f"frequency {self.freq_!r}" if self.freq_ is not None else "a RangeIndex grid"
            raise ValueError(
                f"the panel's time grid ({type(panel.index).__name__} without a frequency) cannot be "
                f"placed after the fitted one ({fitted}); build the panel with Panel(...) or "
                "Panel.from_frame so that its DatetimeIndex has freq set"
            )
        first, fit_end = pd.Timestamp(panel.index[0]), pd.Timestamp(self.fit_end_)
        if (first.tz is None) != (fit_end.tz is None):
            # pandas cannot subtract one from the other (a TypeError deep in here)
            aware, naive = ("the panel's", "the fitted") if fit_end.tz is None else ("the fitted", "the panel's")
            raise ValueError(
                f"{aware} time grid has a time zone and {naive} has none (fitted up to {self.fit_end_}, "
                f"the panel starts at {first}); give both in the same kind of timestamps (a model fitted on "
                "naive UTC times scores a zoned column converted with .dt.tz_convert(None))"
            )
        not_on_grid = ValueError(
            f"the panel starts at {panel.index[0]}, which is not on the fitted grid "
            f"(step {self.freq_} from {self.fit_end_})"
        )
        if first.tz is not None:
            # fit_end_ is ISO text with the UTC offset of that instant, not the zone's name: read
            # back, it is in a fixed-offset zone, which date_range refuses to mix with the panel's
            # and which would step days and weeks by 24 h across a daylight-saving switch. The
            # same instant on the panel's clock steps as the panel's own grid does.
            fit_end = fit_end.tz_convert(first.tz)
        offset = pd.tseries.frequencies.to_offset(self.freq_)
        step = None
        # A fixed duration divides the gap, except for days, weeks and months on a zoned grid. On a
        # naive grid a week anchored on a weekday is 7 days (step_duration): the fit's end falls on
        # that weekday, so a whole number of weeks after it does too.
        if not steps_by_wall_clock(self.freq_) or first.tz is None:
            step = step_duration(offset)  # None for months: no fixed duration
        if step is None:
            # A calendar step: count the grid's points between the fit's end and the panel's start,
            # which must both be points of one grid (the range from the earlier one reaches the later).
            earlier, later = (first, fit_end) if first <= fit_end else (fit_end, first)
            points = pd.date_range(earlier, later, freq=offset)
            if len(points) == 0 or points[0] != earlier or points[-1] != later:
                raise not_on_grid
            return len(points) - 1 if first > fit_end else -(len(points) - 1)
        steps, remainder = divmod(first - fit_end, step)
        if remainder != pd.Timedelta(0):
            off_by = min(remainder, step - remainder)
            if first.tz is None and step % pd.Timedelta("1D") == pd.Timedelta(0) and off_by <= _DST_SHIFT:
                # A naive grid of days an hour or two off: most likely local times given with UTC
                # offsets, which Panel.from_frame reads as UTC instants, on both sides of a switch.
                raise ValueError(
                    f"{not_on_grid} but {off_by} off it: if these are local times "
                    "written with UTC offsets (read as UTC instants), a daylight-saving switch moved a step of "
                    "days by an hour or two in UTC. Give the timestamps' time zone at fit and at score time "
                    "(zone-aware timestamps, e.g. pd.to_datetime(column, utc=True).dt.tz_convert('Europe/Berlin'); "
                    "on the command line a Parquet timestamp column with its zone): days and weeks then follow "
                    "the wall clock"
                )
            raise not_on_grid
        return int(steps)

    def score(self, panel) -> Panel:
        """Anomaly scores of new data that follows the fitted history.

        Parameters
        ----------
        panel : Panel or array_like, shape (n_contexts, n_times)
            New observations on the fitted time grid; contexts may be any
            subset or order of the fitted ones. Contexts unseen at fit are
            scored from a cold start where the detector can, else NaN (see
            :meth:`unseen_contexts`).

        Returns
        -------
        Panel
            Same contexts and times; float scores, higher = more anomalous,
            comparable across contexts; NaN where a point cannot be scored
            (missing observation, not enough history).

        Warns
        -----
        HistoryGapWarning
            When the panel does not start at the step after the fitted history:
            the detector keeps the history of ``fit`` only, and sees the steps in
            between as missing, so that windows and seasons reaching into them
            score NaN. A job that scores batch after batch calls :meth:`update`
            with each batch after scoring it (``score(new)`` then ``update(new)``),
            so that the next batch follows the kept history at once; or it fits
            again on a recent history before each batch (as ``tsanomaly fit`` and
            ``score`` do when run each day), or scores the whole span since the fit
            at once.
        """
        self.check_fitted("score")
        panel = _as_panel(panel, after=self).to(self.device_)
        rows = self.context_rows(panel)
        _warn_gap_after_fit(self, panel)
        scores = self._score(panel.values, panel, rows)
        return panel.with_values(scores)

    def update(self, panel) -> "BaseDetector":
        """Roll the kept state forward over new observations, without refitting anything.

        After ``update(new)``, ``score(next)`` of the data that follows ``new`` gives the
        scores that ``score(concat(new, next))`` gives for ``next``'s points: the kept
        history tails (and STL's level, slope and recent values) move on over ``new``,
        while the scales, models, seasonal shapes and thresholds learned by ``fit`` stay
        as they are. A job that scores hour after hour calls ``score(hour)`` then
        ``update(hour)``; it still refits now and then, as the data drift. Each
        detector states whether its scores after an update equal those of one call
        exactly or within rounding (:meth:`_update`).

        Parameters
        ----------
        panel : Panel or array_like, shape (n_contexts, n_times)
            New observations on the fitted grid, starting after the fitted history (or
            the last update). Steps skipped before it are missing, as in :meth:`score`
            (and warned about with a :class:`HistoryGapWarning`). Fitted contexts absent
            from ``panel`` are missing (NaN) for its steps; contexts of ``panel`` unseen
            at fit are ignored: they stay unseen (scored from a cold start, or NaN, by
            later calls), since no state was fitted for them.

        Returns
        -------
        self
            With ``fit_end_`` the last time of ``panel`` and ``n_fit_times_`` counting
            every step since the fit's start (the skipped ones too), so that seasonal
            phases stay aligned.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            When ``panel`` does not start after the fitted history (or the last update),
            or is on another grid.
        NotImplementedError
            When the detector class does not implement the ``_update`` hook.
        """
        self.check_fitted("update")
        if type(self)._update is BaseDetector._update:
            raise NotImplementedError(f"{self._why_no_update()}; fit again on a recent history instead")
        panel = _as_panel(panel, after=self).to(self.device_)
        steps = self.steps_after_fit(panel, require_new=True)
        if panel.n_times == 0:
            return self
        rows = self.context_rows(panel)
        _warn_gap_after_fit(self, panel)
        xp = backend.array_module(panel.values)
        seen = np.flatnonzero(rows >= 0)
        values = xp.full((len(self.contexts_), panel.n_times), xp.nan)
        if len(seen):
            values[xp.asarray(rows[seen])] = panel.values[xp.asarray(seen)]
        full = Panel(values, self.contexts_, panel.index)
        with self._unchanged_on_failure():
            self._update(values, full, np.arange(len(self.contexts_), dtype=np.int64), steps)
            self.n_fit_times_ = int(self.n_fit_times_) + steps - 1 + panel.n_times
            self.fit_end_ = _grid_description(panel.index)[1]
        return self

    def _why_no_update(self) -> str | None:
        """Why :meth:`update` would be refused whatever the data, or None: the one rule that
        ``update`` and ``tsanomaly score --update`` (before any work) both ask. Detectors with
        settings that have no update (an ensemble combining by peak) extend it."""
        if type(self)._update is BaseDetector._update:
            return f"{type(self).__name__} does not implement update()"
        return None

    def _update(self, values, panel: Panel, rows: np.ndarray, steps: int) -> None:  # pragma: no cover - abstract
        """Move the kept per-context state on over new data (see :meth:`update`).

        ``values`` (n_fitted_contexts, n_new): the new data, one row per fitted context in
        the order of ``contexts_`` (NaN where the context was absent from the panel);
        ``panel`` holds them on the new grid; ``rows`` is ``arange(n_fitted_contexts)``;
        ``steps`` the grid steps from the kept history's last point to the first new one.
        Runs before ``fit_end_`` and ``n_fit_times_`` are moved on. Assign new arrays to
        the state rather than changing them in place: a hook that raises leaves the
        detector as it was.
        """
        raise NotImplementedError

    def kept_width(self) -> int | None:
        """Points of history a new point's score looks back on: the width ``history_`` has
        after a fit on a long enough history (None, the default: the kept history's own width).

        Detectors that keep a history state it, because a fit on fewer points keeps a narrower
        history: the grid steps skipped before new data (:meth:`with_kept_history`) and the
        history rolled forward by :meth:`update` (:meth:`with_updated_history`) are measured
        against the full look-back, not against that narrower width.
        """
        return None

    def _look_back(self, history) -> int:
        width = self.kept_width()
        return history.shape[1] if width is None else int(width)

    def with_updated_history(self, values, panel: Panel, rows: np.ndarray, history):
        """The kept history after new data: the last :meth:`kept_width` columns of
        :meth:`with_kept_history` (history, NaN for skipped steps, new values; all of them
        while fewer), a new array.

        A history fitted on fewer points thus grows to the full look-back over updates. (Kept
        at its fitted width, a model fitted on two days looked back over two days for good,
        and one fitted on fewer points than the matrix profile's window never scored again.)
        """
        xp = backend.array_module(values)
        if not _is_identity(rows, history) or backend.array_module(history) is not xp:
            x = self.with_kept_history(values, panel, rows, history)
            return x[:, max(0, x.shape[1] - self._look_back(history)):].copy()
        # Every fitted context in its own row (what update passes): the same columns written
        # straight into one new array, rather than gathered, masked, concatenated and sliced (four
        # copies of the history: 5.1 s and 1.6 GB more at 200,000 contexts x 14 days hourly).
        n_gap = self._gap_width(panel, history)
        n_kept, n_new = history.shape[1], values.shape[1]
        width = min(n_kept + n_gap + n_new, self._look_back(history))
        new = min(n_new, width)
        gap = min(n_gap, width - new)
        old = width - new - gap
        # with_kept_history's type: its NaN gap is float64 even when empty.
        out = xp.empty((history.shape[0], width), dtype=xp.result_type(history.dtype, values.dtype, xp.float64))
        out[:, :old] = history[:, n_kept - old:]
        out[:, old:old + gap] = xp.nan
        out[:, old + gap:] = values[:, n_new - new:]
        return out

    def fitted_without_data(self) -> np.ndarray:
        """Which fitted contexts the model holds no observed value for, to score new data from.

        Returns
        -------
        numpy.ndarray of bool, shape (n_fitted_contexts,)
            True where the history the detector kept from ``fit`` (``history_``: the
            last points that a new point's score looks back on) is all missing.
            Detectors that keep no history return all False unless they say
            otherwise (STL: the contexts it skipped at fit). A job names these as
            the cause when such contexts get no score.
        """
        self.check_fitted("fitted_without_data")
        history = getattr(self, "history_", None)
        if history is None or np.ndim(history) != 2:
            return np.zeros(len(self.contexts_), dtype=bool)
        # Reduced where the history lives: a GPU fit's history stays there, and only the flags move.
        xp = backend.array_module(history)
        return backend.to_numpy(~xp.isfinite(history).any(axis=1))

    def with_kept_history(self, values, panel: Panel, rows: np.ndarray, history):
        """New values preceded by each context's history kept from ``fit``.

        Parameters
        ----------
        values : array, shape (n_contexts, n_new)
            The new panel's values (NumPy or CuPy).
        panel : Panel
            The new panel (its first time says how many grid steps were skipped since the fit).
        rows : numpy.ndarray of int, shape (n_contexts,)
            Row of each context in the fitted state (-1: unseen, its past is NaN).
        history : array, shape (n_fitted_contexts, n_kept)
            The per-context tail the detector kept at fit time.

        Returns
        -------
        array, shape (n_contexts, n_kept + n_gap + n_new)
            History, NaN for the grid steps missing between the fit's end and the
            new data (at most :meth:`kept_width`: beyond that the history is out of
            reach anyway), then the new values.

        Raises
        ------
        ValueError
            When the new data does not start after the fitted history.
        """
        xp = backend.array_module(values)
        n_gap = self._gap_width(panel, history)
        host_from_device = xp is np and backend.is_device_array(history)
        if _is_identity(rows, history) and not host_from_device:
            # Each fitted context in its own row (a panel of all of them, in order): the history
            # as it is, which the concatenation below copies once, rather than gathered and masked.
            past = xp.asarray(history)
        else:
            take = np.maximum(rows, 0)
            if host_from_device:
                # Host values (alerts explain on the host) and a history kept on the GPU by a fit there:
                # CuPy refuses an implicit copy (np.asarray), so copy the rows needed, explicitly.
                kept = backend.to_numpy(history[take])
            else:
                kept = xp.asarray(history)[xp.asarray(take)]
            seen = xp.asarray(rows >= 0)
            past = xp.where(seen[:, None], kept, xp.nan)
        gap = xp.full((values.shape[0], n_gap), xp.nan)
        return xp.concatenate([past, gap, values], axis=1)

    def _gap_width(self, panel: Panel, history) -> int:
        """NaN columns between the kept ``history`` and ``panel``'s first time: the grid steps
        skipped, capped at the look-back. Raises ValueError when ``panel`` does not start after
        the fitted history."""
        steps = self.steps_after_fit(panel, require_new=True)
        # Capped at the look-back, not at the history's width: a history fitted on fewer points
        # is narrower, and a longer gap capped at its width put its points nearer the new data
        # than they are (a seasonal comparison at the wrong phase: scores of 20 for 0.5).
        return min(steps - 1, self._look_back(history))

    def _thresholds_for(self, rows: np.ndarray) -> np.ndarray:
        """Threshold per row of a scored panel; unseen contexts get the global threshold."""
        per_row = np.full(len(rows), self.global_threshold_, dtype=np.float64)
        seen = rows >= 0
        per_row[seen] = np.asarray(self.threshold_)[rows[seen]]
        return per_row

    def predict(self, panel) -> Panel:
        """Boolean Panel: True where the score is strictly above the calibrated threshold.

        A score equal to the threshold is not flagged (a constant history calibrates
        a threshold equal to its scores, and the same constant is no anomaly); NaN
        scores are False.
        """
        self.check_fitted("predict")
        scores = self.score(panel)
        rows = self.context_rows(scores)
        values = backend.to_numpy(scores.values)
        flags = thresholds.above_threshold(values, self._thresholds_for(rows)[:, None])
        return Panel(flags, scores.contexts, scores.index)

    def alerts(self, panel, scores: Panel | None = None) -> pd.DataFrame:
        """One row per run of consecutive flagged points, most anomalous first.

        A point is flagged as in :meth:`predict`: its score is strictly above its
        context's threshold.

        Parameters
        ----------
        panel : Panel or array_like
            New data, as for :meth:`score`.
        scores : Panel or array, optional
            Scores already computed by :meth:`score` for ``panel`` (saves scoring
            twice): a Panel with the same contexts (in the same order) and times
            as ``panel``, or an array of ``panel``'s shape.

        Returns
        -------
        pandas.DataFrame
            Columns: the context column(s), ``start``, ``end``, ``peak_time``,
            ``peak_score``, ``n_points``, ``threshold``, ``detector``, then the
            detector's explanation columns (``explanation_columns``).

        Raises
        ------
        ValueError
            When ``scores`` does not match ``panel`` (other contexts, times or shape),
            or when a context column has the name of an alert column
            (:meth:`alert_columns`): the table would hold both under one name.
        """
        self.check_fitted("alerts")
        panel = _as_panel(panel, after=self)
        # Before scoring, which can take long: the context columns come first in the table.
        check_column_names({"context column": _context_names(panel.contexts)}, self.alert_columns(), "the alerts",
                           "rename it before building the Panel")
        if scores is None:
            scores = self.score(panel)
        rows = self.context_rows(panel)
        score_values = _checked_scores(scores, panel)
        per_row = self._thresholds_for(rows)
        flags = thresholds.above_threshold(score_values, per_row[:, None])
        ctx_rows, starts, ends = _runs(flags)
        # Peak of each run: argmax of the score inside [start, end].
        peak_pos = np.empty(len(ctx_rows), dtype=np.int64)
        for k, (r, s, e) in enumerate(zip(ctx_rows, starts, ends)):
            peak_pos[k] = s + int(np.nanargmax(score_values[r, s : e + 1]))
        context_frame = _context_frame(panel.contexts, ctx_rows)
        table = pd.DataFrame(
            {
                # Index.take keeps a zoned grid's dtype when no alert is raised too (NumPy gives objects).
                "start": panel.index.take(starts),
                "end": panel.index.take(ends),
                "peak_time": panel.index.take(peak_pos),
                "peak_score": score_values[ctx_rows, peak_pos],
                "n_points": ends - starts + 1,
                "threshold": per_row[ctx_rows],
                "detector": type(self).__name__,
            }
        )
        table = pd.concat([context_frame, table], axis=1)
        if len(ctx_rows):
            host_panel = panel.to("cpu")
            for name, column in self._explain(host_panel, score_values, ctx_rows, peak_pos).items():
                table[name] = column
        else:
            # Typed as when there are alerts, so a quiet day's (or chunk's) table has the columns of a
            # busy one: Parquet partitions and chunks concatenated by the jobs keep one schema.
            empty = {"double": np.zeros(0), "bigint": np.zeros(0, np.int64), "boolean": np.zeros(0, bool),
                     "timestamp": panel.index[:0], "string": pd.Series(dtype="str")}
            for name in self.explanation_columns:
                table[name] = empty[self.explanation_types.get(name, "double")]
        return table.sort_values("peak_score", ascending=False, kind="stable").reset_index(drop=True)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted detector to ``path``: a zip of ``model.json`` and ``arrays.npz``.

        Parameters are stored as JSON and arrays as ``.npz`` without pickle,
        so loading a model file cannot run code. Context labels load back
        equal and of the same type, so a loaded model scores as this one.

        The file is written as every output of a job is (:mod:`tsanomaly.io`):
        to a hidden temporary file of its own in the same folder, then moved
        into place atomically, so a reader sees the previous model or the new
        one, never half of one, and two saves at once do not write into one
        temporary file. A replaced file keeps its permissions, and a path that
        is a symbolic link is written to the link's target.

        Raises
        ------
        ValueError
            When a context label cannot be stored faithfully: labels may be
            text, integers, floats, booleans, None/NaN/NA/NaT or pandas
            Timestamps (see :func:`_encode_level`); when ``path`` is a folder.
            Nothing is written then.
        FileNotFoundError
            When the folder of ``path`` does not exist.
        """
        # The writer of every job output (this module's ``io`` is the standard library's).
        from tsanomaly.io import _atomic_write

        self.check_fitted("save")
        arrays = {}
        zoned = (getattr(self, "job_columns_", None) or {}).get("tz") is not None
        version = MODEL_FORMAT_VERSION_ZONED if zoned else MODEL_FORMAT_VERSION
        meta = {"format": MODEL_FORMAT, "version": version, **_encode_detector(self, "", arrays)}
        buffer = io.BytesIO()
        # Compressed once, by the model file's zip at deflate level 1: savez_compressed (level 6)
        # inside the deflated zip compressed twice, and a save took most of an hourly job's fixed
        # cost (20,000 contexts x 15 days: baseline 1.51 s -> 0.33 s for 4.6 -> 6.5 MB, STL 0.90 s
        # -> 0.42 s for 13.6 -> 14.0 MB). Files saved either way load alike.
        np.savez(buffer, **arrays)

        def write(handle):
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("model.json", json.dumps(meta, indent=1))
                archive.writestr("arrays.npz", buffer.getvalue(), compresslevel=1)

        _atomic_write(path, write)


def load(path, device: str | None = None) -> BaseDetector:
    """Read a detector written by :meth:`BaseDetector.save`.

    Parameters
    ----------
    path : str or Path
    device : {"auto", "cpu", "cuda"}, optional
        Override the saved ``device`` parameter (a model fitted on a GPU can
        score on a CPU machine).

    Returns
    -------
    BaseDetector
        A fitted detector whose scores equal those of the saved one.

    Raises
    ------
    ValueError
        When ``path`` is not a tsanomaly model file or a damaged one (not a zip,
        a missing or malformed ``model.json`` or ``arrays.npz``, a parameter this
        version does not know); the message names the path and what is wrong.
    """
    meta, arrays = _read_model_file(path)
    try:
        return _decode_detector(meta, arrays, device)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# Fitted attributes every fitted detector has (set by prepare_fit and the calibration).
_BASE_FITTED_STATE = ("contexts_", "n_fit_times_", "freq_", "fit_end_", "threshold_", "global_threshold_")


def _read_model_file(path) -> tuple[dict, dict]:
    """``(model.json, arrays of arrays.npz)`` of a model file, checked as far as their structure goes.

    Every way the file can be damaged (or not be a model file at all) is a
    ValueError naming ``path``, instead of whatever zipfile, json or NumPy would
    raise deep inside.
    """
    not_a_model = f"{path} is not a tsanomaly model file"
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [name for name in ("model.json", "arrays.npz") if name not in archive.namelist()]
            if missing:
                raise ValueError(f"{not_a_model} (the zip archive lacks {', '.join(missing)})")
            meta_bytes = archive.read("model.json")
            arrays_bytes = archive.read("arrays.npz")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ValueError(f"{not_a_model} (not a zip archive, or a damaged one: {exc})") from exc
    try:
        meta = json.loads(meta_bytes)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"{not_a_model} (model.json is not valid JSON: {exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{not_a_model} (model.json holds a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{not_a_model} (format {meta.get('format')!r})")
    if meta.get("version") not in (MODEL_FORMAT_VERSION, MODEL_FORMAT_VERSION_ZONED):
        raise ValueError(f"{path}: model format version {meta.get('version')!r} is not supported")
    # NumPy's own error for a non-.npz blob advises allow_pickle=True; a model file never
    # holds pickled data, so the message says so instead of repeating that advice.
    damaged_arrays = (
        f"{path}: arrays.npz is damaged or not a NumPy .npz archive of plain arrays "
        "(tsanomaly model files never hold pickled data: do not load it with allow_pickle=True)"
    )
    try:
        npz = np.load(io.BytesIO(arrays_bytes), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(damaged_arrays) from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):  # a bare .npy array, not an archive of named arrays
        raise ValueError(damaged_arrays)
    try:
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(damaged_arrays) from exc
    return meta, arrays


# ---------------------------------------------------------------------- helpers
def refuse_frame_or_path(x, caller: str, accepted: str = _ACCEPTED) -> None:
    """Raise TypeError for a pandas DataFrame or Series, or a path (str, bytes, os.PathLike).

    ``caller`` names the function in the message, ``accepted`` what it takes instead.
    NumPy reads a frame as a bare array: a wide frame (contexts x times) lost both of its
    axes (contexts numbered 0, 1, 2 and alerts at positions instead of times), a long one
    became one context per row, or failed inside pandas on its text labels; and a string
    reached the backend, which read it as a device name ("expected 'cpu' or 'cuda', got
    'history.parquet'"). Neither says what to pass instead; this does.
    """
    if isinstance(x, (pd.DataFrame, pd.Series)):
        kind = type(x).__name__
        raise TypeError(
            f"{caller} takes {accepted}, not a pandas {kind}: build a Panel from a long frame (one row "
            "per context and time) with Panel.from_frame(df, context=..., time=..., value=...), or from a "
            "wide one (one row per context, one column per time) with Panel(df.to_numpy(), df.index, df.columns)"
        )
    if isinstance(x, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{caller} takes {accepted}, not a path or a string ({x!r}): read the file into a Panel "
            "first (Panel.from_frame(pandas.read_parquet(path), context=..., time=..., value=...)), "
            "or fit a file with tsanomaly.jobs.fit_file"
        )


def _is_identity(rows: np.ndarray, history) -> bool:
    """Whether ``rows`` (fitted row of each context) names every row of ``history`` in order:
    ``arange(n_fitted_contexts)``, as :meth:`BaseDetector.update` passes, so that nothing needs
    gathering or masking."""
    rows = np.asarray(rows)
    return rows.shape == (history.shape[0],) and bool((rows == np.arange(len(rows))).all())


def _as_panel(panel, after: "BaseDetector | None" = None) -> Panel:
    """``panel`` itself (its values as float64), or an array wrapped as a Panel.

    Raises TypeError for a pandas DataFrame or Series and for a path (see
    :func:`refuse_frame_or_path`): the one place where every method that takes data
    (``fit``, ``fit_score``, ``score``, ``update``, ``predict``, ``alerts``,
    ``unseen_contexts``) turns it into a Panel.

    With ``after`` (a fitted detector on a RangeIndex grid), an array's time
    axis continues the fitted one, so ``det.fit(x_train).score(x_new)`` works
    on plain arrays.

    A Panel of other values than float64 (a boolean one: Panel keeps booleans, which
    are meant for ``predict``'s flags) comes back with its values as float64, which
    every detector's ``_fit`` and ``_score`` are promised (docs/CONTRACT.md).
    """
    if isinstance(panel, Panel):
        return _float_panel(panel)
    refuse_frame_or_path(panel, "a detector")
    panel = Panel.from_array(panel)
    if after is not None and hasattr(after, "fit_end_") and after.freq_ is None:
        start = int(after.fit_end_) + 1
        panel = Panel(panel.values, panel.contexts, pd.RangeIndex(start, start + panel.n_times, name="time"))
    return panel


def _float_panel(panel: Panel) -> Panel:
    """``panel`` itself when its values are float64, else the same panel with them as float64.

    A boolean Panel (0/1 events given as flags) passed to ``fit`` or ``score`` must score as
    its float copy; detectors computing on booleans do not (``np.log1p`` of a boolean array is
    float16, which moved STL's scores by up to 0.22).
    """
    if panel.values.dtype == np.float64:
        return panel
    return panel.with_values(panel.values.astype(np.float64))


def _checked_scores(scores, panel: Panel) -> np.ndarray:
    """Host float array of ``scores`` given to :meth:`BaseDetector.alerts` for ``panel``.

    A Panel must have ``panel``'s contexts (same order) and times, so that each
    score row is flagged against its own context's threshold; an array must
    have ``panel``'s shape. Anything else is a ValueError saying what differs.
    """
    if isinstance(scores, Panel):
        if not scores.contexts.equals(panel.contexts):
            if scores.n_contexts != panel.n_contexts:
                detail = f"{scores.n_contexts} contexts, the panel {panel.n_contexts}"
            else:
                k = next((k for k, (a, b) in enumerate(zip(scores.contexts, panel.contexts)) if a != b), None)
                detail = (
                    "other context labels" if k is None
                    else f"context {scores.contexts[k]!r} at row {k} where the panel has {panel.contexts[k]!r}"
                )
            raise ValueError(f"scores must have the panel's contexts in the same order; scores has {detail}")
        if not scores.index.equals(panel.index):
            raise ValueError(
                f"scores must have the panel's times; scores has {scores.n_times} times "
                f"({_span(scores.index)}), the panel {panel.n_times} ({_span(panel.index)})"
            )
        values = scores.values
    elif isinstance(scores, np.ndarray) or backend.is_device_array(scores):
        values = scores
    else:
        raise ValueError(f"scores must be a Panel or an array of the panel's shape, got {type(scores).__name__}")
    values = backend.to_numpy(values)
    if values.shape != panel.shape:
        raise ValueError(f"scores have shape {values.shape}, but the panel has shape {panel.shape}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"scores must be numbers, got dtype {values.dtype}")
    return values


def _span(index: pd.Index) -> str:
    return f"{index[0]} to {index[-1]}" if len(index) else "none"


def _same_value(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and odd objects compare ambiguously
        return a is b


def _grid_description(index: pd.Index) -> tuple[str | None, object]:
    """(frequency string or None for a RangeIndex, last point) of a time grid, JSON-able."""
    if isinstance(index, pd.DatetimeIndex):
        freq = index.freq.freqstr if index.freq is not None else None
        return freq, (pd.Timestamp(index[-1]).isoformat() if len(index) else None)
    return None, (int(index[-1]) if len(index) else -1)


def alerting_contexts(
    panel: Panel, ctx_rows: np.ndarray, fitted_rows: np.ndarray
) -> tuple[Panel, np.ndarray, np.ndarray]:
    """The contexts that alerts were raised on, as a Panel of their own, each alert's row in it, and
    their fitted rows.

    For a detector's ``_explain`` whose explanation of a context depends on that context alone:
    it then recomputes what it needs (an expected value, a tracked level) for the few contexts
    that alerted rather than for every context of ``panel``, which cost as much as scoring the
    whole panel again.

    Parameters
    ----------
    panel : Panel
        The scored panel.
    ctx_rows : numpy.ndarray of int, shape (n_alerts,)
        Row of each alert's context in ``panel``.
    fitted_rows : numpy.ndarray of int, shape (n_contexts,)
        Fitted row of each of ``panel``'s contexts, -1 for unseen
        (:meth:`BaseDetector.context_rows` of ``panel``, as the scores were computed).

    Returns
    -------
    alerting : Panel
        ``panel``'s rows that hold an alert, in ``panel``'s order, each once.
    rows : numpy.ndarray of int, shape (n_alerts,)
        Row of each alert's context in ``alerting``.
    alerting_fitted_rows : numpy.ndarray of int, shape (alerting.n_contexts,)
        Their fitted rows, taken from ``fitted_rows``: matched again on ``alerting``'s labels alone,
        a panel whose one context level mixes numbers and text (``1``, ``"3"``) could match
        differently (``"3"`` unseen in the whole panel, read as the fitted ``3`` once the numbers
        are gone), and explain an alert from a history its score never used.
    """
    distinct, rows = np.unique(ctx_rows, return_inverse=True)
    return panel.take(distinct), rows.ravel(), np.asarray(fitted_rows)[distinct]


def _runs(flags: np.ndarray):
    """Runs of consecutive True values in each row: (row, start, end) arrays, end inclusive."""
    padded = np.zeros((flags.shape[0], flags.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = flags
    change = np.diff(padded, axis=1)
    start_rows, starts = np.nonzero(change == 1)
    end_rows, ends = np.nonzero(change == -1)
    # np.nonzero walks row-major, so starts and ends pair up in order.
    return start_rows.astype(np.int64), starts.astype(np.int64), (ends - 1).astype(np.int64)


def _context_names(contexts: pd.Index) -> list:
    """The names of the context columns of an alerts table: the index's level names, or
    ``"context"`` for a single unnamed level (a Panel built from an array)."""
    # to_frame on no rows: the column names pandas would give, without copying millions of labels.
    names = list(contexts[:0].to_frame(index=False).columns)
    return ["context"] if names in ([None], [0]) else names


def _context_frame(contexts: pd.Index, rows: np.ndarray) -> pd.DataFrame:
    frame = contexts.to_frame(index=False)
    frame.columns = _context_names(contexts)
    return frame.iloc[rows].reset_index(drop=True)


def _comparable_labels(fitted: pd.Index, new: pd.Index, fitted_as_text=None) -> tuple[pd.Index, pd.Index]:
    """``(fitted, new)`` with the labels of each level as text on both sides where one side's
    labels are all text and the other's are not (:func:`tsanomaly.io.labels_as_text`), so that
    both compare by one rule. Levels already alike are kept.

    A model fitted by a job holds its labels as text (``"13335"``), however the file stored them;
    a panel built in Python from the same data holds them as they were read (``13335``), and
    ``"13335" != 13335`` would leave every context unseen. The other way round too: a model
    fitted in Python on integer ASNs (from Parquet) scoring a panel whose ASNs were read as text
    (from JSON lines) saw every context as unseen, without an alert.

    ``fitted_as_text(convert)``, when given, returns ``fitted`` with the levels flagged in
    ``convert`` as text (a detector caches it: converting a million fitted labels takes a
    second, and a job matches contexts several times per chunk).
    """
    def text(labels) -> bool:
        return pd.api.types.infer_dtype(labels, skipna=True) == "string"

    def levels(index):
        return index.levels if isinstance(index, pd.MultiIndex) else [index]

    if len(new) == 0:
        return fitted, new
    pairs = list(zip(levels(fitted), levels(new)))
    new_to_text = tuple(text(mine) and not text(theirs) for mine, theirs in pairs)
    fitted_to_text = tuple(text(theirs) and not text(mine) for mine, theirs in pairs)
    if any(new_to_text):
        new = _levels_as_text(new, new_to_text)
    if any(fitted_to_text):
        converted = (fitted_as_text or (lambda convert: _levels_as_text(fitted, convert)))(fitted_to_text)
        if converted.is_unique:  # two fitted labels with one text (1 and 1.0) keep their own types
            fitted = converted
    return fitted, new


def _levels_as_text(index: pd.Index, convert) -> pd.Index:
    """``index`` with the levels flagged in ``convert`` as text (:func:`tsanomaly.io.labels_as_text`).

    An :class:`Unmatched` placeholder (a model merged from no rows) stays itself: as its text
    it would match a context named "<no context>".
    """
    from tsanomaly.io import labels_as_text

    def level_as_text(labels: pd.Index) -> np.ndarray:
        text = labels_as_text(pd.Series(labels)).to_numpy(dtype=object)
        unmatched = np.fromiter((isinstance(label, Unmatched) for label in labels), dtype=bool, count=len(labels))
        text[unmatched] = labels[unmatched]
        return text

    arrays = [level_as_text(index.get_level_values(k)) if change else index.get_level_values(k)
              for k, change in enumerate(convert)]
    if isinstance(index, pd.MultiIndex):
        return pd.MultiIndex.from_arrays(arrays, names=index.names)
    return pd.Index(arrays[0], name=index.name)


def _to_json(value):
    if isinstance(value, BaseDetector):  # a nested detector parameter (an ensemble's members)
        return {"__detector__": f"{type(value).__module__}.{type(value).__qualname__}", "params": _to_json(value.get_params())}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):  # a parameter given as an array (periods=np.array([24, 168]))
        return _to_json(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fitted_attributes(detector) -> dict:
    """The fitted state of a detector: public attributes whose names end with ``_``."""
    return {name: value for name, value in vars(detector).items() if name.endswith("_") and not name.startswith("_")}


def _encode_detector(detector: "BaseDetector", prefix: str, arrays: dict) -> dict:
    """JSON description of a fitted detector; its arrays go into ``arrays`` under ``prefix``."""
    state = {}
    for name, value in _fitted_attributes(detector).items():
        _encode_state(name, value, state, arrays, prefix)
    return {
        "class": f"{type(detector).__module__}.{type(detector).__qualname__}",
        "params": _to_json(detector.get_params()),
        "state": state,
    }


def _registered_class(qualified_name) -> type:
    """A detector class by its qualified name; only tsanomaly's own detector modules are imported."""
    import importlib

    from tsanomaly.detectors import DETECTOR_CLASSES

    if not isinstance(qualified_name, str):
        raise ValueError(f"unknown detector class {qualified_name!r}")
    # Never import a path the model file names freely: only the built-in detector modules.
    builtin = {f"{module}.{name}": module for module, name in DETECTOR_CLASSES.values()}
    if qualified_name in builtin and qualified_name not in _DETECTOR_REGISTRY:
        importlib.import_module(builtin[qualified_name])
    cls = _DETECTOR_REGISTRY.get(qualified_name)
    if cls is None:
        raise ValueError(f"unknown detector class {qualified_name!r}")
    return cls


def _json_field(encoded, field: str, kind: type, what: str):
    """``encoded[field]``, which must be of type ``kind``; ValueError naming ``what`` otherwise."""
    if not isinstance(encoded, dict) or not isinstance(encoded.get(field), kind):
        raise ValueError(f"{what} in model.json has no valid {field!r} entry: the file is damaged")
    return encoded[field]


def _build_detector(cls: type, params: dict) -> "BaseDetector":
    """``cls(**params)``, with a ValueError for parameters ``cls`` does not take."""
    valid = cls._get_param_names()
    unknown = [name for name in params if name not in valid]
    if unknown:
        noun = "parameter" if len(unknown) == 1 else "parameters"
        raise ValueError(
            f"unknown {noun} {', '.join(repr(n) for n in unknown)} for {cls.__name__} "
            f"(saved by another version?); it takes {valid}"
        )
    try:
        return cls(**params)
    except TypeError as exc:  # a required parameter missing from the file
        raise ValueError(f"cannot build {cls.__name__} from the saved parameters: {exc}") from exc


def _decode_detector(encoded: dict, arrays: dict, device: str | None = None) -> "BaseDetector":
    """Rebuild a fitted detector from :func:`_encode_detector`'s description (registered classes only)."""
    if not isinstance(encoded, dict):
        raise ValueError("a detector in model.json is not a JSON object: the file is damaged")
    cls = _registered_class(encoded.get("class"))
    saved_params = _json_field(encoded, "params", dict, cls.__name__)
    state = _json_field(encoded, "state", dict, cls.__name__)
    params = {name: _params_from_json(value) for name, value in saved_params.items()}
    if device is not None:
        params["device"] = device
    detector = _build_detector(cls, params)
    for name, item in state.items():
        setattr(detector, name, _decode_state(item, arrays, device, name=name))
    _check_base_state(detector)
    detector._check_fitted_state()
    detector.device_ = backend.resolve_device(detector.device)
    detector._restore()
    return detector


def _check_base_state(detector: "BaseDetector") -> None:
    """ValueError unless the base's fitted attributes have the types ``fit`` gives them.

    A damaged value (``n_fit_times_`` of None, a threshold per context too few)
    would otherwise load fine and fail later, at scoring, with a TypeError or
    IndexError far from its cause. The detector's own state is checked by its
    ``_check_fitted_state``.
    """
    def damaged(attribute):
        return ValueError(
            f"{type(detector).__name__}'s fitted {attribute} is {getattr(detector, attribute, None)!r}: "
            "the file is damaged"
        )

    for attribute in _BASE_FITTED_STATE:
        if not hasattr(detector, attribute):
            raise ValueError(
                f"the saved fitted state of {type(detector).__name__} lacks {attribute}: the file is damaged"
            )
    if not isinstance(detector.contexts_, pd.Index):
        raise damaged("contexts_")
    if not is_int(detector.n_fit_times_) or detector.n_fit_times_ < 1:
        raise damaged("n_fit_times_")
    if detector.freq_ is None:  # a RangeIndex grid: fit_end_ is the last position
        if not is_int(detector.fit_end_):
            raise damaged("fit_end_")
    else:  # a DatetimeIndex grid: a frequency string and an ISO timestamp
        if not isinstance(detector.freq_, str):
            raise damaged("freq_")
        try:
            pd.tseries.frequencies.to_offset(detector.freq_)
        except ValueError:
            raise damaged("freq_") from None
        if not isinstance(detector.fit_end_, str):
            raise damaged("fit_end_")
        try:
            pd.Timestamp(detector.fit_end_)
        except ValueError:
            raise damaged("fit_end_") from None
    threshold = detector.threshold_
    if (
        not isinstance(threshold, np.ndarray)
        or threshold.dtype.kind not in "iuf"
        or threshold.shape != (len(detector.contexts_),)
        or np.isnan(threshold).any()  # calibrate gives each context a number or inf, never NaN
    ):
        raise damaged("threshold_")
    global_threshold = detector.global_threshold_
    if not isinstance(global_threshold, (int, float)) or isinstance(global_threshold, bool):
        raise damaged("global_threshold_")
    if np.isnan(global_threshold):  # calibrate gives a number or inf, never NaN
        raise damaged("global_threshold_")


def _is_numeric_array(value, ndim: int | None = None, rows: int | None = None) -> bool:
    return (
        (isinstance(value, np.ndarray) or backend.is_device_array(value))
        and value.dtype.kind in "biuf"
        and (ndim is None or value.ndim == ndim)
        and (rows is None or value.shape[0] == rows)
    )


def _is_non_empty(value, kind: type, item) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return isinstance(value, kind) and len(value) > 0 and all(item(v) for v in items)


# Kinds of fitted attribute (BaseDetector._fitted_state_kinds): (test, what the value must be).
_STATE_KINDS = {
    "int": (is_int, "an integer"),
    "int_list": (lambda v: _is_non_empty(v, list, lambda x: is_int(x) and x >= 1), "a list of positive integers"),
    "dict": (lambda v: isinstance(v, dict), "a JSON object"),
    "index": (lambda v: isinstance(v, pd.Index), "an index"),
    "array": (_is_numeric_array, "a numeric array"),
    "arrays": (lambda v: _is_non_empty(v, dict, _is_numeric_array), "a dict of numeric arrays"),
    "detectors": (lambda v: _is_non_empty(v, list, lambda d: isinstance(d, BaseDetector)), "a list of detectors"),
}
# Kinds with one row per context (or per entry of another attribute): their number of dimensions.
_ROW_KINDS = {"vector": 1, "matrix": 2, "matrices": 2}


def _check_state_kind(detector: "BaseDetector", name: str, kind) -> None:
    """ValueError unless ``detector.<name>`` is of ``kind`` (see :meth:`BaseDetector._fitted_state_kinds`)."""
    if not hasattr(detector, name):
        raise ValueError(f"the saved fitted state of {type(detector).__name__} lacks {name}: the file is damaged")
    value = getattr(detector, name)
    if isinstance(kind, str) and kind in _STATE_KINDS:
        test, expected = _STATE_KINDS[kind]
        ok = test(value)
    else:
        shape, per = (kind, "contexts_") if isinstance(kind, str) else kind
        rows = per if is_int(per) else getattr(detector, per)
        rows = rows if is_int(rows) else len(rows)
        ndim = _ROW_KINDS[shape]
        arrays = f"numeric {ndim}-d array{'s' if shape == 'matrices' else ''} of {rows} rows"
        expected = ("a dict of " if shape == "matrices" else "a ") + arrays + ("" if is_int(per) else f" (one per {per})")
        if shape == "matrices":
            ok = _is_non_empty(value, dict, lambda a: _is_numeric_array(a, ndim, rows))
        else:
            ok = _is_numeric_array(value, ndim, rows)
    if not ok:
        raise ValueError(
            f"{type(detector).__name__}'s fitted {name} is {_describe(value)}, not {expected}: the file is damaged"
        )


def _describe(value) -> str:
    """Short description of a fitted value for an error message (arrays by dtype and shape)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _params_from_json(value):
    """Inverse of :func:`_to_json` for parameters: rebuilds nested (unfitted) detectors."""
    if isinstance(value, dict) and "__detector__" in value:
        cls = _registered_class(value["__detector__"])
        params = _json_field(value, "params", dict, f"the nested {cls.__name__}")
        return _build_detector(cls, {k: _params_from_json(v) for k, v in params.items()})
    if isinstance(value, list):
        return [_params_from_json(v) for v in value]
    return value


def _encode_state(name, value, meta_state: dict, arrays: dict, prefix: str = "") -> None:
    """Put one fitted attribute into the JSON state or the array store (no pickle)."""
    key_base = prefix + name
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, BaseDetector) for v in value):
        meta_state[name] = {
            "kind": "detectors",
            "items": [_encode_detector(det, f"{key_base}/{k}/", arrays) for k, det in enumerate(value)],
        }
        return
    if backend.is_device_array(value):
        value = backend.to_numpy(value)
    if isinstance(value, pd.Index):
        frame = value.to_frame(index=False)
        columns = []
        # The index's own names: to_frame names an unnamed level 0, which would come back as "0".
        for k, (column, level_name) in enumerate(zip(frame.columns, value.names)):
            level = _encode_level(frame[column], f"{key_base}/level{k}", arrays, name)
            level["name"] = None if level_name is None else str(level_name)
            columns.append(level)
        meta_state[name] = {"kind": "index", "levels": columns, "multi": isinstance(value, pd.MultiIndex)}
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"fitted attribute {name} is an object array; store numbers or strings")
        arrays[key_base] = value
        meta_state[name] = {"kind": "array", "key": key_base}
    elif isinstance(value, dict) and value and all(
        isinstance(v, np.ndarray) or backend.is_device_array(v) for v in value.values()
    ):
        keys = {}
        for key, item in value.items():
            arrays[f"{key_base}/{key}"] = backend.to_numpy(item)
            keys[str(key)] = f"{key_base}/{key}"
        meta_state[name] = {"kind": "array_dict", "keys": keys}
    else:
        encoded = _to_json(value)
        try:
            json.dumps(encoded)
        except TypeError as exc:
            raise TypeError(
                f"fitted attribute {name} of type {type(value).__name__} cannot be saved as JSON or arrays; "
                "keep it as NumPy arrays and rebuild it in _restore"
            ) from exc
        meta_state[name] = {"kind": "json", "value": encoded}


# Types a label of an object index level may have in a model file. arrays.npz holds no Python
# objects, so a level whose labels are not all text is stored as each label's text beside a
# code naming its type, and rebuilt label by label: before, every label became its text, so
# after load the context 1 was "1" and NaN was "nan", unseen among the contexts scored.
_LABEL_TYPES = ("str", "int", "float", "bool", "none", "na", "nat", "timestamp")


def _label_type(label) -> str | None:
    """The name in :data:`_LABEL_TYPES` of ``label``'s type, or None when a model file cannot hold it."""
    if isinstance(label, str):
        return "str"
    if label is None:
        return "none"
    if label is pd.NA:
        return "na"
    if label is pd.NaT:
        return "nat"
    if isinstance(label, (bool, np.bool_)):  # before int: bool is an int subclass
        return "bool"
    if isinstance(label, (int, np.integer)):
        return "int"
    if isinstance(label, (float, np.floating)):
        return "float"
    if isinstance(label, pd.Timestamp):
        return "timestamp"
    return None


def _label_text(label, kind: str) -> str:
    """``label`` (of type ``kind``) as the text :func:`_label_from_text` reads back exactly."""
    if kind == "str":
        return str(label)
    if kind in ("none", "na", "nat"):
        return ""
    if kind == "bool":
        return str(bool(label))
    if kind == "int":
        return str(int(label))
    if kind == "float":
        return repr(float(label))  # the shortest text that reads back as the same float; "nan", "inf"
    # A timestamp: ISO 8601 (to the nanosecond), its unit, and its time zone's name, which the
    # ISO offset alone loses (Europe/Paris is +01:00 in winter only). No part holds a space.
    return " ".join([label.isoformat(), label.unit] + ([] if label.tz is None else [str(label.tz)]))


def _label_from_text(text: str, kind: str):
    """Inverse of :func:`_label_text`; ValueError (or TypeError) for a text that is not of ``kind``."""
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        if text not in ("True", "False"):
            raise ValueError(f"{text!r} is not a boolean")
        return text == "True"
    if kind == "none":
        return None
    if kind == "na":
        return pd.NA
    if kind == "nat":
        return pd.NaT
    stamp, unit, *zone = text.split(" ")
    label = pd.Timestamp(stamp).as_unit(unit)
    return label.tz_convert(zone[0]) if zone else label


def _encode_level(column: pd.Series, key: str, arrays: dict, attribute: str) -> dict:
    """Store one index level's labels in ``arrays`` under ``key``; its entry in model.json (without its name).

    Numbers, booleans and naive timestamps of a typed level are stored as their array,
    labels that are all text as text (both as before), a time-zone-aware level as UTC
    instants and the zone's name, and any other level label by label with its type, so
    that every label loads back equal, of the same type, as the same context.

    Raises
    ------
    ValueError
        When a label cannot be stored faithfully (its type is not one of
        :data:`_LABEL_TYPES`, a text ending in NUL, a time zone known by no name),
        rather than saving a label that would load as another one.
    """
    def refuse(label, why: str) -> ValueError:
        return ValueError(f"cannot save fitted attribute {attribute}: its label {label!r} {why}")

    level = {"key": key}
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        zone = str(column.dtype.tz)
        instants = pd.DatetimeIndex(column).tz_convert("UTC").tz_localize(None)
        try:
            restored = instants.tz_localize("UTC").tz_convert(zone)
        except (ValueError, TypeError, KeyError):
            restored = None
        if restored is None or str(restored.tz) != zone:
            raise refuse(column.iloc[0], f"has a time zone ({zone}) that does not load back under its name")
        arrays[key] = instants.to_numpy()
        level["tz"] = zone
        return level
    data = column.to_numpy()
    if data.dtype.kind in "biufmM":
        arrays[key] = data
        return level
    if pd.api.types.infer_dtype(data, skipna=False) in ("string", "empty"):
        # All text (or no label), the usual case, checked without a loop over a million labels:
        # the layout of every version. NumPy's text arrays drop a trailing NUL: refused below.
        text = data.astype(str)
        if (np.char.str_len(text) == np.fromiter(map(len, data), dtype=np.int64, count=len(data))).all():
            arrays[key] = text
            return level
    labels = list(data)
    if labels and all(isinstance(label, Unmatched) for label in labels):
        level["unmatched"] = True  # restored as Unmatched labels, not as their text
        arrays[key] = data.astype(str)
        return level
    kinds = [_label_type(label) for label in labels]
    for label, kind in zip(labels, kinds):
        if kind is None:
            raise refuse(
                label,
                f"is of type {type(label).__name__}, which a model file cannot hold; context labels may be "
                "text, integers, floats, booleans, None/NaN/NA/NaT or pandas Timestamps",
            )
        if kind == "str" and label.endswith("\x00"):
            raise refuse(label, "ends with a NUL character, which NumPy's text arrays drop")
        if kind == "timestamp":
            # A zone is stored by its name: one that names no zone (a dateutil file) is refused.
            try:
                restored = _label_from_text(_label_text(label, kind), kind)
            except (ValueError, TypeError, KeyError):
                restored = None
            if restored is None or restored != label or str(restored.tz) != str(label.tz):
                raise refuse(label, f"has a time zone ({label.tz}) that does not load back under its name")
    names = sorted(set(kinds), key=_LABEL_TYPES.index)
    arrays[key] = np.array([_label_text(label, kind) for label, kind in zip(labels, kinds)], dtype=str)
    arrays[f"{key}/types"] = np.array([names.index(kind) for kind in kinds], dtype=np.uint8)
    level["types"] = {"key": f"{key}/types", "names": names}
    return level


def _decode_level(level: dict, arrays: dict, name: str) -> pd.Index:
    """Inverse of :func:`_encode_level` (files without "types" or "tz" are read as every version wrote them)."""
    damaged = f"fitted attribute {name!r} in model.json has a malformed index level: the file is damaged"
    labels = _saved_array(arrays, level.get("key"), name)
    if level.get("unmatched") is True:
        labels = np.array([Unmatched() for _ in range(len(labels))], dtype=object)
    elif "tz" in level:
        if not isinstance(level["tz"], str) or labels.dtype.kind != "M":
            raise ValueError(damaged)
        try:
            return pd.DatetimeIndex(labels).tz_localize("UTC").tz_convert(level["tz"]).rename(level.get("name"))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(damaged) from exc
    elif "types" in level:
        types = level["types"]
        names = types.get("names") if isinstance(types, dict) else None
        if not isinstance(names, list) or not all(n in _LABEL_TYPES for n in names) or labels.dtype.kind != "U":
            raise ValueError(damaged)
        codes = _saved_array(arrays, types.get("key"), name)
        if codes.dtype.kind not in "iu" or codes.shape != labels.shape or ((codes < 0) | (codes >= len(names))).any():
            raise ValueError(damaged)
        decoded = np.empty(len(labels), dtype=object)
        try:
            for k, (text, code) in enumerate(zip(labels.tolist(), codes.tolist())):
                decoded[k] = _label_from_text(text, names[code])
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(damaged) from exc
        return pd.Index(decoded, dtype=object, name=level.get("name"))
    return pd.Index(labels, name=level.get("name"))


def _saved_array(arrays: dict, key, name: str) -> np.ndarray:
    """The array stored under ``key``; ValueError when arrays.npz lacks it."""
    if not isinstance(key, str) or key not in arrays:
        raise ValueError(
            f"fitted attribute {name!r} refers to array {key!r}, which arrays.npz lacks: the file is damaged"
        )
    return arrays[key]


def _decode_state(encoded: dict, arrays: dict, device: str | None = None, name: str = "?"):
    """Inverse of :func:`_encode_state`; ValueError (naming the attribute) for a malformed entry."""
    what = f"fitted attribute {name!r}"
    kind = _json_field(encoded, "kind", str, what)
    if kind == "detectors":
        return [_decode_detector(item, arrays, device) for item in _json_field(encoded, "items", list, what)]
    if kind == "array":
        return _saved_array(arrays, encoded.get("key"), name)
    if kind == "array_dict":
        keys = _json_field(encoded, "keys", dict, what)
        return {key: _saved_array(arrays, ref, name) for key, ref in keys.items()}
    if kind == "index":
        levels = []
        for level in _json_field(encoded, "levels", list, what):
            if not isinstance(level, dict) or not isinstance(level.get("name"), (str, type(None))):
                raise ValueError(f"{what} in model.json has a malformed index level: the file is damaged")
            levels.append(_decode_level(level, arrays, name))
        if not levels:
            raise ValueError(f"{what} in model.json has no levels: the file is damaged")
        if _json_field(encoded, "multi", bool, what):
            return pd.MultiIndex.from_arrays(levels, names=[lv.name for lv in levels])
        return levels[0]
    if kind == "json":
        if "value" not in encoded:
            raise ValueError(f"{what} in model.json has no 'value': the file is damaged")
        return encoded["value"]
    raise ValueError(f"{what} in model.json has an unknown kind {kind!r}: the file is damaged")
