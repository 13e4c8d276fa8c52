"""EnsembleDetector: several detectors' scores, made comparable and averaged.

Each detector speaks its own units (a robust z-score, a normalised distance,
a standardised reconstruction error). The ensemble maps every member's score
onto a common scale learnt from the training scores, then averages:

- ``combine="rank"``: a member's score becomes its empirical CDF value among
  that member's training scores (in [0, 1]); the ensemble score is the mean.
- ``combine="zmean"``: a member's score becomes a robust z-score against its
  training scores (median, MAD); the ensemble score is the mean. A member whose
  training scores are mostly one value (MAD 0: a sparse member, 0 at most points)
  is measured in the floored scale of :func:`tsanomaly.scaling.robust_center_scale`
  instead; a member whose training scores are all equal (or none finite) says
  nothing about what spread is normal and is left out, like a member that did
  not score a point.
- ``combine="max"``: a member's score is divided by the highest score it gave
  the training data; the ensemble score is the largest of these ratios, i.e. the
  verdict of the member most surprised relative to what it saw on clean data.
  A member whose training maximum is not above 0 (all zeros, or no finite
  training score) gives no unit to divide by and is left out.
  Suited to members that look at the same data in different ways (matrix
  profiles of a series and of its first difference), where one of them sees an
  anomaly the others miss.
- ``combine="peak"``: a member's scores of one context are divided by the height of
  that member's second peak in the same batch (its highest score more than
  ``peak_separation`` points from its highest one); the ensemble score is the
  largest of these ratios. The member whose strongest event stands out most from
  everything else it saw in the batch decides. Made for offline review of a
  recording that holds one event to find (matrix profiles of several windows and
  views, each of which sees some kinds of anomaly best); a point's score depends
  on its whole batch, so it is no rule for streaming. Where a member's second peak
  in a context is not above 0 (it scores 0 everywhere outside its top: a quiet
  series, such as an ASN with a handful of failed logins), the batch gives that
  member no unit there, and its scores of that context are divided by its training
  maximum instead, the unit of ``"max"``; a member whose training maximum is not
  above 0 either is left out of that context.

Where **no** member has a unit (``"zmean"``: every member's training scores
are all equal; ``"max"``, and ``"peak"`` where a batch gives none: no member's
training maximum is above 0), as on a history without a single event, where the
baseline and STL score 0 everywhere, leaving every member out would leave the
ensemble unable ever to alert while its members alert on the first event. Each
member's score is then kept in its own units instead (``"zmean"``: less its
training median; ``"max"``, ``"peak"``: as it is).
For ``"rank"``, a member whose training scores are all one value maps a score
below, at and above it to 0, 0.5 and 1 (the mid-rank of the tie), so that a
score above everything it saw ranks above its training scores rather than
equal to them. A score tied with only part of the training scores keeps the
empirical CDF, the top of the tie: the baseline's 0, 39-43% of its training
scores on ``make_security_panel``'s failed logins and 62-66% on registrations
(seeds 0-2), maps to about 0.4 and 0.64. The mid-rank there too was measured and
not adopted: with the default members, a pooled AUC-ROC of 0.929 / 0.930 /
0.940 against 0.931 / 0.933 / 0.943 (the protocol of ``EnsembleDetector``'s
``combine``).

Members score each context independently, and so does the ensemble.
"""
from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np

from tsanomaly import backend
from tsanomaly.base import BaseDetector, CalibrationWarning, HistoryGapWarning, _same_value, alerting_contexts
from tsanomaly.panel import Panel
from tsanomaly.scaling import MAD_TO_SIGMA, robust_center_scale
from tsanomaly.validation import is_int

__all__ = ["COMBINE_RULES", "DEFAULT_MEMBERS", "EnsembleDetector"]

#: Ways of putting members on one scale and combining them (see the module docstring).
COMBINE_RULES = ("rank", "zmean", "max", "peak")

#: Members of an ensemble made without ``detectors``: the baseline and robust STL (see
#: EnsembleDetector's ``combine`` for what they measured together).
DEFAULT_MEMBERS = ("baseline", "stl")

# Training-score quantiles kept per member for the rank mapping.
_N_QUANTILES = 1001


def _clone(detector: BaseDetector) -> BaseDetector:
    """An unfitted copy with the same parameters."""
    return type(detector)(**detector.get_params())


def _second_peak(scores: np.ndarray, separation: int) -> np.ndarray:
    """Each row's highest score more than ``separation`` points from its highest one.

    Parameters
    ----------
    scores : numpy.ndarray, shape (n,) or (n_contexts, n)
    separation : int

    Returns
    -------
    numpy.ndarray, shape (1,) or (n_contexts, 1)
        Broadcasts against ``scores``. Where a row has no finite score that far
        away, its highest score (ratio 1: nothing stands out); NaN where it has no
        finite score. Not floored: a second peak of 0 or below gives no unit, which
        the caller handles (see ``EnsembleDetector._calibrated``).
    """
    rows = np.atleast_2d(scores).astype(np.float64, copy=True)
    rows[~np.isfinite(rows)] = -np.inf
    top = rows.argmax(axis=1)
    first = rows[np.arange(rows.shape[0]), top]
    positions = np.arange(rows.shape[1])
    near = np.abs(positions[None, :] - top[:, None]) <= separation
    second = np.where(near, -np.inf, rows).max(axis=1)
    second = np.where(np.isfinite(second), second, first)
    second = np.where(np.isfinite(second), second, np.nan)
    return second.reshape((1,) if np.ndim(scores) == 1 else (-1, 1))


#: A second peak at most this fraction of the member's training maximum is rounding noise, no unit
#: (``combine="peak"``): 1e-9 is far above float64 rounding of distances of order 1, far below any
#: real second peak.
_PEAK_NOISE = 1e-9


def _member_scale(quantiles: np.ndarray, finite: np.ndarray) -> float:
    """The unit of a member's robust z-score (``combine="zmean"``).

    Parameters
    ----------
    quantiles : numpy.ndarray, shape (1001,)
        The member's training-score quantiles.
    finite : numpy.ndarray, shape (n,)
        Its finite training scores (one 0 when it had none).

    Returns
    -------
    float
        1.4826 x the MAD (read off the quantiles). Where that is 0 (more than half the
        training scores share one value, as with a member that scores 0 at most points),
        the scale of :func:`tsanomaly.scaling.robust_center_scale`: 1.2533 x the mean
        absolute deviation from the median, which follows the scores' own size. A fixed
        floor of 1e-12 made each of the other scores a z-score near 1e12, and the
        threshold with them. NaN when all training scores are equal: they say nothing
        of what deviation is normal, so any unit would be arbitrary (1e-12 made the
        slightest change of the member an alert); the member's calibrated scores are
        then NaN, so it is left out of every point's mean. Left out rather than counted
        as 0: a member with no finite training score (one 0 here) would otherwise be
        absent from the training means, which set the threshold, but count in later ones.
    """
    scale = MAD_TO_SIGMA * float(np.median(np.abs(quantiles - np.median(quantiles))))
    if scale > 0:
        return scale
    if finite.min() == finite.max():
        return np.nan
    return float(robust_center_scale(finite[None, :])[1][0])


def _member_labels(members: list) -> list:
    """How each member is named in the ensemble's explanations.

    Parameters
    ----------
    members : list of BaseDetector

    Returns
    -------
    list of str
        The class name where no other member shares the class, so that the labels of an
        ensemble of distinct classes stay as they were. Members of one class (matrix
        profiles at several windows, as made for ``combine="peak"``) add the parameters in
        which they differ, ``MatrixProfileDetector(window=12)``: by class name alone their
        scores could not be told apart. Members that still share a label (the same
        class and parameters) add their place in the list, from 1:
        ``MatrixProfileDetector#2``.
    """
    from tsanomaly.base import _same_value

    names = [type(member).__name__ for member in members]
    labels = list(names)
    for name in dict.fromkeys(names):
        same = [k for k, other in enumerate(names) if other == name]
        if len(same) < 2:
            continue
        params = [members[k].get_params() for k in same]
        differ = [key for key in params[0] if any(not _same_value(params[0][key], p.get(key)) for p in params[1:])]
        if differ:
            for k, p in zip(same, params):
                labels[k] = f"{name}({', '.join(f'{key}={p[key]!r}' for key in differ)})"
    return [f"{label}#{k + 1}" if labels.count(label) > 1 else label for k, label in enumerate(labels)]


#: A member's settings that the ensemble does not use: it calibrates one threshold of its own,
#: on the combined scores, with its own ``threshold``, ``contamination`` and ``per_context``.
_MEMBER_THRESHOLD_SETTINGS = ("threshold", "contamination", "per_context")


def _ignored_member_settings(members: list) -> list:
    """``"label (name=value, ...)"`` for each member whose threshold settings differ from its class's defaults.

    Those its scores depend on are left out (the baseline's ``contamination`` with a
    ``level_window``: :meth:`BaseDetector._threshold_settings_in_scores`). The others only set the
    member's own threshold, which nothing reads, so an ensemble of
    ``RollingZScoreDetector(threshold=99.0, per_context=True)`` scored exactly as one of default
    members, without a word.
    """
    ignored = []
    for label, member in zip(_member_labels(members), members):
        defaults = inspect.signature(type(member).__init__).parameters
        changed = [
            f"{name}={getattr(member, name)!r}"
            for name in _MEMBER_THRESHOLD_SETTINGS
            if name in defaults and name not in member._threshold_settings_in_scores()
            and not _same_value(getattr(member, name), defaults[name].default)
        ]
        if changed:
            ignored.append(f"{label} ({', '.join(changed)})")
    return ignored


def _member(spec) -> BaseDetector:
    """An ensemble member from its spec: a detector, a short name (``"stl"``), or a dict of a
    short name and parameters (``{"name": "stl", "periods": [24, 168]}``), the forms a model file
    and the command line's ``--param detectors=[...]`` can hold."""
    from tsanomaly.detectors import make_detector

    if isinstance(spec, BaseDetector):
        return spec
    if isinstance(spec, str):
        return make_detector(spec)
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        # set_params, not the constructor: a misspelt name is a ValueError that lists the valid ones
        return make_detector(spec["name"]).set_params(**{key: value for key, value in spec.items() if key != "name"})
    raise ValueError(
        "ensemble members must be tsanomaly detectors, short names such as 'stl', or dicts such as "
        f"{{'name': 'stl', 'periods': 24}}; got {spec!r}"
    )


class EnsembleDetector(BaseDetector):
    """Average of several detectors' calibrated scores.

    Parameters
    ----------
    detectors : list
        The members (unfitted; each is cloned at fit): detectors, short names of
        :func:`tsanomaly.detectors.make_detector` (``"stl"``), or dicts of a short
        name and parameters (``{"name": "mp", "window": 12}``), as the command line
        gives them (``--param 'detectors=["baseline", "stl"]'``). Default:
        ``["baseline", "stl"]``, the rolling z-score baseline and robust STL with
        their defaults (neither needs PyTorch).
    combine : {"rank", "zmean", "max", "peak"}, default "max"
        How members' scores are put on one scale and combined (see module docstring).
        The default, with the default members, gave a pooled AUC-ROC of 0.947 /
        0.949 / 0.958 on ``make_security_panel`` data (200 contexts, seeds 0 / 1 /
        2; ``python benchmarks/lstm_quality.py --only baseline,stl,ensemble``),
        above both members (STL 0.943 / 0.941 / 0.951, the baseline 0.863 / 0.865 /
        0.875), where ``"rank"`` gave 0.931 / 0.933 / 0.943 and ``"zmean"`` 0.935 /
        0.928 / 0.942: the baseline sees some bursts that STL's seasonal fit absorbs,
        and taking the more surprised member keeps them without diluting STL's
        verdict elsewhere.
    peak_separation : int, optional
        For ``combine="peak"``: how far (in points) a second peak must lie from the
        highest score, a positive integer (checked whatever ``combine`` is). Default:
        each member's own ``window``.
    threshold, contamination, per_context, device
        See :class:`tsanomaly.base.BaseDetector`. The ensemble calibrates one
        threshold (or one per context) on its combined training scores with its
        own ``threshold``, ``contamination`` and ``per_context``; the members'
        own are not used (except where a member's scores depend on one: the
        baseline's ``contamination`` with a ``level_window``), and ``fit`` warns
        (UserWarning) naming each member whose settings differ from its
        defaults, since they would change nothing. At fit, ``device`` is passed to
        members whose own ``device`` is ``"auto"``. A fitted ensemble moved with
        ``load(..., device=)`` or ``set_params(device=)`` moves every member there
        (the fitted members hold resolved devices, so one pinned to the CPU is not
        told apart from one that was ``"auto"``).

    Attributes
    ----------
    members_ : list of BaseDetector
        The fitted copies of the members.
    member_quantiles_ : numpy.ndarray, shape (n_members, 1001)
        Quantiles of each member's finite training scores (all NaN when it had none: no unit
        under any rule, left out; model files saved before 2026-12-07 hold 0 there).
    member_scale_ : numpy.ndarray, shape (n_members,)
        The unit of each member's robust z-score (``combine="zmean"``): 1.4826 x the
        MAD of its training scores; where that is 0, the scale of
        :func:`tsanomaly.scaling.robust_center_scale` (1.2533 x their mean absolute
        deviation from the median, at least 1e-3 x |median|); NaN for a member
        whose training scores are all equal (or none finite), which is then left out.

    Notes
    -----
    Higher = more anomalous. A point's ensemble score is the mean (``"max"``,
    ``"peak"``: the largest) over the members that scored it (NaN members are
    left out; NaN when none scored it). Alerts explain it by ``member_scores``,
    each member's calibrated score at the peak as ``name=value`` text, a member
    named by its class, with the parameters it differs in where another member
    shares the class (``MatrixProfileDetector(window=12)=0.353``).
    """

    explanation_columns = ("member_scores",)
    explanation_types = {"member_scores": "string"}

    def __init__(
        self, detectors=None, combine="max", peak_separation=None, threshold="quantile", contamination=0.001, per_context=False, device="auto"
    ):
        self.detectors = detectors
        self.combine = combine
        self.peak_separation = peak_separation
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context
        self.device = device

    def _members(self) -> list:
        # A single detector passed bare would otherwise fail in list() with a TypeError.
        if self.detectors is not None and not isinstance(self.detectors, (list, tuple)):
            raise ValueError(f"detectors must be a list of tsanomaly detectors, got {type(self.detectors).__name__}")
        if self.detectors is not None and len(self.detectors) == 0:
            raise ValueError(
                f"detectors is an empty list; name at least one member, or leave detectors out for the "
                f"default members {list(DEFAULT_MEMBERS)}"
            )
        members = [_member(spec) for spec in (DEFAULT_MEMBERS if self.detectors is None else self.detectors)]
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, got {self.combine!r}")
        # Checked whatever combine is: a bad value must not wait, unnoticed, for combine="peak".
        if self.peak_separation is not None and not (is_int(self.peak_separation) and self.peak_separation >= 1):
            raise ValueError(f"peak_separation must be None or a positive integer, got {self.peak_separation!r}")
        if self.combine == "peak":
            for member in members:
                self._separation(member)  # raises for a bad or missing separation
        return members

    def _separation(self, member) -> int:
        """Points between a member's highest score and its second peak (combine="peak")."""
        separation = self.peak_separation if self.peak_separation is not None else member.get_params().get("window")
        if not is_int(separation) or separation < 1:
            raise ValueError(
                f"combine='peak' needs peak_separation (a positive integer) or members with an integer window; "
                f"got {separation!r} for {type(member).__name__}"
            )
        return int(separation)

    def fitted_without_data(self) -> np.ndarray:
        """The contexts none of the members holds data for (a point is scored if any member scores
        it; see :meth:`tsanomaly.base.BaseDetector.fitted_without_data`)."""
        self.check_fitted("fitted_without_data")
        return np.logical_and.reduce([member.fitted_without_data() for member in self.members_])

    def _fitted_state_kinds(self) -> dict:
        """Checked at load (see BaseDetector._fitted_state_kinds); each member checks its own state as it loads."""
        return {"members_": "detectors", "member_quantiles_": ("matrix", "members_"), "member_scale_": ("vector", "members_")}

    def min_fit_times(self) -> int | None:
        """Fewest time steps for a finite training score (see :meth:`BaseDetector.min_fit_times`): the
        ensemble scores a point that any member scores, so the smallest of the members', but it fits
        every member, so at least the length of each member whose fit raises on a shorter history
        (None when a member does not state its own)."""
        members = self._members()
        needs = [member.min_fit_times() for member in members]
        if any(need is None for need in needs):
            return None
        raising = [need for member, need in zip(members, needs) if member._fit_raises_when_short]
        return max([min(needs)] + raising)

    @property
    def _fit_raises_when_short(self) -> bool:
        """Whether the fit raises below :meth:`min_fit_times`: where a member's does (an ensemble's
        need is then that of its longest such member)."""
        return any(member._fit_raises_when_short for member in self._members())

    def _fit(self, values, panel: Panel):
        self.members_ = []
        calibration = []
        scales = []
        member_scores = []
        members = self._members()
        ignored = _ignored_member_settings(members)
        if ignored:
            warnings.warn(
                f"EnsembleDetector ignores its members' threshold settings: {'; '.join(ignored)}. The ensemble "
                "calibrates one threshold on the combined scores, with its own threshold, contamination and "
                "per_context; set those on the EnsembleDetector instead",
                UserWarning, stacklevel=4,
            )
        for member in members:
            fitted = _clone(member)
            if fitted.device == "auto":
                fitted.set_params(device=self.device_)
            with warnings.catch_warnings():
                # A member's own threshold is not the ensemble's: the ensemble warns for itself
                # (BaseDetector.fit) when its combined training scores leave it unable to alert.
                warnings.simplefilter("ignore", CalibrationWarning)
                train = backend.to_numpy(fitted.fit_score(panel).values)
            self.members_.append(fitted)
            finite = train[np.isfinite(train)]
            if finite.size == 0:
                # No finite training score (a history shorter than the member needs): no unit under
                # any rule, NaN quantiles (zeros made "rank" map every later positive score to 1, a
                # member absent from the training means that set the threshold counting in later ones).
                calibration.append(np.full(_N_QUANTILES, np.nan))
                scales.append(np.nan)
            else:
                quantiles = np.quantile(finite, np.linspace(0.0, 1.0, _N_QUANTILES))
                calibration.append(quantiles)
                scales.append(_member_scale(quantiles, finite))
            member_scores.append(train)
        # Row k: the training-score quantiles of member k (rank), from which the median (zmean) follows.
        self.member_quantiles_ = np.vstack(calibration)
        self.member_scale_ = np.array(scales)
        return self._combine(member_scores)

    def _has_unit(self, k: int) -> bool:
        """Whether member ``k``'s training scores give it a unit under ``combine="max"`` (a
        training maximum above 0) or ``"zmean"`` (a finite scale); ``"rank"`` always has one.
        Under ``"peak"``, the unit a context falls back on where the batch gives none (a
        training maximum above 0)."""
        if self.combine in ("max", "peak"):
            return float(self.member_quantiles_[k][-1]) > 0
        if self.combine == "zmean":
            return bool(np.isfinite(self.member_scale_[k]))
        return bool(np.isfinite(self.member_quantiles_[k][0]))  # rank: any finite training score

    def _calibrated(self, k: int, scores: np.ndarray) -> np.ndarray:
        quantiles = self.member_quantiles_[k]
        # A member without a unit is left out, unless no member has one (see the module docstring).
        own_units = not any(self._has_unit(j) for j in range(len(self.members_)))
        if self.combine == "rank":
            if not np.isfinite(quantiles[0]):  # no finite training score: no ranks to place it in
                mapped = scores if own_units else np.full(scores.shape, np.nan)
            elif quantiles[0] == quantiles[-1]:  # one value: np.interp would map it, and all above, to 1
                mapped = np.sign(scores - quantiles[0]) * 0.5 + 0.5
            else:
                mapped = np.interp(scores, quantiles, np.linspace(0.0, 1.0, _N_QUANTILES))
        elif self.combine == "max":
            top = float(quantiles[-1])  # the training maximum
            # Not above 0: no unit (a floor such as 1e-12 would make any later score a ratio near 1e12).
            if top > 0:
                mapped = scores / top
            else:
                mapped = scores if own_units else np.full(scores.shape, np.nan)
        elif self.combine == "peak" and not np.isfinite(quantiles[-1]) and not own_units:
            # No finite training score: no unit, left out as under the other rules. (The batch's
            # second peak stood in, uncalibrated: 291 of 486 scores moved, and 2 alerts came from a
            # member the threshold was calibrated without.)
            mapped = np.full(scores.shape, np.nan)
        elif self.combine == "peak":
            second = _second_peak(scores, self._separation(self.members_[k]))
            # A second peak not above 0 (a quiet context the member scores 0 outside its top)
            # gives no unit: the old floor of 1e-12 turned the top of every such context into a
            # ratio near 1e12, above any real event, and the calibrated threshold with it (1.8e14
            # beside a burst of 26). The training maximum, combine="max"'s unit, stands in; where
            # that is not above 0 either, the member is left out of the context, or keeps its own
            # units where no member has a training maximum above 0 (a history without events).
            top = float(quantiles[-1])
            fallback = top if top > 0 else (1.0 if own_units else np.nan)
            # "Not above 0" up to rounding: z-normalised distances between spikes of different
            # heights in a quiet context come out at 1e-16, not 0, and made ratios near 1e15.
            noise = _PEAK_NOISE * top if top > 0 else 0.0
            mapped = scores / np.where(second > noise, second, fallback)
        else:
            # NaN for a member with no unit (constant training scores, see _member_scale): left out.
            scale = 1.0 if own_units else self.member_scale_[k]
            centre = quantiles[_N_QUANTILES // 2]
            mapped = (scores - (centre if np.isfinite(centre) else 0.0)) / scale
        return np.where(np.isfinite(scores), mapped, np.nan)

    def _combine(self, member_scores: list) -> np.ndarray:
        """Ensemble scores from the members' raw scores (one array per member, any one shape)."""
        stacked = np.stack([self._calibrated(k, s) for k, s in enumerate(member_scores)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no member scored the point: NaN
            return np.nanmax(stacked, axis=0) if self.combine in ("max", "peak") else np.nanmean(stacked, axis=0)

    def _member_scores(self, values, panel: Panel, rows: np.ndarray) -> list:
        # Each member on its own device (an explicit one may differ from the ensemble's; alerts
        # explain on the host): _score skips the move that BaseDetector.score makes.
        return [backend.to_numpy(member._score(backend.to_device(values, member.device_), panel.to(member.device_), rows))
                for member in self.members_]

    def _why_no_update(self) -> str | None:
        """The base's reason, else ``combine="peak"`` (see :meth:`_update`), else a member's."""
        why = super()._why_no_update()
        if why is None and self.combine == "peak":
            why = "combine='peak' compares peaks within each scored batch and has no update"
        if why is None:
            reasons = (member._why_no_update() for member in getattr(self, "members_", None) or ())
            why = next((f"a member: {reason}" for reason in reasons if reason is not None), None)
        return why

    def _update(self, values, panel: Panel, rows: np.ndarray, steps: int) -> None:
        """Update each member (see :meth:`BaseDetector.update`): exact where every member's
        update is, else within the members' stated rounding, mapped as the rule maps scores:
        ``combine="rank"`` interpolates between training quantiles, some of which lie about
        1e-15 apart (near-ties of a member's training scores), so a member's rounding of 1e-15
        can move the ensemble's score by one quantile step (measured: 3.3e-4 for an STL member
        off by 6.7e-15). The members are updated as copies
        and put in place together, so that an update that fails leaves the ensemble as it was.

        Refused for ``combine="peak"``: it compares each member's peaks within the scored batch
        (an offline rule), so that no state carried from one batch to the next makes the next
        batch score as in one call over both (0.4 apart where one call gave 1.1).
        """
        why = self._why_no_update()
        if why is not None:
            raise ValueError(f"{why}; score the whole span at once, or fit again")
        members = []
        for member in self.members_:
            member = copy.copy(member)
            with warnings.catch_warnings():
                # The ensemble warns for itself (BaseDetector.update) of a gap before the panel.
                warnings.simplefilter("ignore", HistoryGapWarning)
                member.update(panel.to(member.device_))
            members.append(member)
        self.members_ = members

    def _score(self, values, panel: Panel, rows: np.ndarray):
        return self._combine(self._member_scores(values, panel, rows))

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Each member's calibrated score at the peak, as ``name=value`` text (names from
        :func:`_member_labels`).

        With every member on the CPU, the members score only the contexts that alerted
        (:func:`tsanomaly.base.alerting_contexts`): a context's scores depend on it alone there,
        bit for bit (each member's rule, and the matrix profile's blocks and the LSTM's padded
        batches, make them so), and so do its calibrated scores under every ``combine`` rule
        (``"peak"``'s second peak is the context's own). Scoring the whole panel again took 1.40 s of
        the 3.72 s that ``score`` took on 50,000 contexts. On a GPU, where the LSTM's batches (and
        the matrix profile's whole-panel transforms) may round differently with the panel's size,
        the whole panel is scored again, so that the explanation is that of the scores.
        """
        rows = self.context_rows(panel)
        if all(member.device_ == "cpu" for member in self.members_):
            panel, ctx_rows, rows = alerting_contexts(panel, ctx_rows, rows)
        calibrated = [self._calibrated(k, s) for k, s in enumerate(self._member_scores(panel.values, panel, rows))]
        names = _member_labels(self.members_)
        text = []
        for r, t in zip(ctx_rows, peak_pos):
            text.append(", ".join(f"{name}={calibrated[k][r, t]:.3g}" for k, name in enumerate(names)))
        return {"member_scores": np.array(text, dtype=object)}
