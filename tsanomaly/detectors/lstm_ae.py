"""LSTMAutoencoderDetector: one LSTM encoder-decoder across all contexts (Malhotra et al. 2016).

An LSTM encoder-decoder learns what a normal stretch of a context looks like
and flags the points it cannot reconstruct.  Training one network per context
does not scale to many contexts and starves the small ones of data, so one
global network is trained on the windows of every context, each context
scaled by its own robust statistics (median and MAD of its history); with
``clusters=k``, one network per group of contexts with a similar daily shape.

PyTorch is optional: this module imports it lazily, so ``import tsanomaly``
never needs it; the network and its training loop live in
:mod:`tsanomaly.kernels.lstm_torch`.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

from tsanomaly import backend
from tsanomaly.base import BaseDetector, min_observed
from tsanomaly.panel import Panel
from tsanomaly.scaling import COUNT_SCALE_FLOOR, count_rows, nanmedian, robust_center_scale, robust_sigma
from tsanomaly.validation import is_finite_real, is_int

__all__ = ["LSTMAutoencoderDetector", "MIN_HELD_OUT_ERRORS", "PRECISIONS", "TOLERANCE"]

PRECISIONS = ("auto", "float32", "mixed")

#: Stated agreement of scores computed on the GPU with CPU float32 scores of the same
#: weights, as ``(rtol, atol)`` in score units: ``|gpu - cpu| <= atol + rtol * |cpu|``.
#: float32: cuDNN and oneDNN sum in different orders (TF32 is switched off);
#: mixed: float16 autocast rounds the LSTM states to ~5e-4 and the reconstruction to
#: ~1e-3 scaled units, a few hundredths of a score unit where errors are small.
TOLERANCE = {"float32": (1e-3, 1e-3), "mixed": (2e-2, 5e-2)}

_INSTALL_HINT = 'pip install "tsanomaly[torch]"'

# Scaled inputs are clipped to +-_INPUT_CLIP before they enter the network: a burst of
# 1000 MADs would saturate every gate and, under float16 autocast, could overflow.
# Errors are measured against the unclipped values, so the burst still scores high.
_INPUT_CLIP = 10.0

# A context's error scale is at least this fraction of its cluster's pooled error scale,
# so a context that happened to be reconstructed perfectly on the held-out windows does
# not turn the smallest error into an alert.
_ERR_SCALE_FLOOR_FRACTION = 0.1

#: A context's own median and scale of a score component need this many effectively independent
#: held-out errors; with fewer it takes its cluster's pooled ones (see _context_error_stats).
# Chosen like thresholds.MIN_SCORES_PER_CONTEXT, a count below which a context's own statistic is
# not trusted: with 8 independent Gaussian (or Poisson) errors, 95% of contexts get a scale above
# half the true one (about 0.5 at 8; 0.0-0.45 at 1-6, where single contexts' scores were inflated
# 2-10x). How overlapping windows count: see _independent_errors.
MIN_HELD_OUT_ERRORS = 8

# The recent medians of overlapping windows hold about this much more information than the
# disjoint stretches of `recent` points they span (see _independent_errors).
_OVERLAP_CREDIT = 4 / 3

# The second score component is the median error of the newest window // _RECENT_DIVISOR
# points (see the class notes).
_RECENT_DIVISOR = 6

# How the second component summarises the recent errors: "median" since the fit that sets
# recent_summary_; "mean" for model files saved before (their statistics were calibrated on it).
_RECENT_SUMMARIES = ("median", "mean")

# The fit warns when fewer than this share of the training windows that hold any data have
# the observed share scoring needs (see _warn_few_training_windows).
_MIN_USABLE_SHARE = 0.5

# Largest learning rate and seed accepted (see _validate). Adam's first step is lr / (1 - beta1),
# 10 x lr, which must stay a float32: above float32's largest value / 10 PyTorch raised a
# RuntimeError ("value cannot be converted to type float without overflow").
_MAX_LR = float(np.finfo(np.float32).max) / 10
_MAX_SEED = 2**32 - 1

# Windows per forward pass when scoring (see _score_batches).
_CPU_SCORE_BATCH = 1024
_GPU_SCORE_BATCH = 65536

# Windows materialised at once when scoring (contexts are scored in chunks): bounds
# memory to about this many x window x 16 bytes however many contexts a panel has.
_MAX_SCORE_WINDOWS = 262_144


def _import_torch():
    """Return the ``torch`` module, or raise ImportError saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"LSTMAutoencoderDetector needs PyTorch, which is not installed ({exc}); "
            f"install it with `{_INSTALL_HINT}`."
        ) from exc
    return torch


def _kernels():
    """The PyTorch kernel module (imported on first use, so torch stays optional)."""
    _import_torch()
    from tsanomaly.kernels import lstm_torch

    return lstm_torch


class LSTMAutoencoderDetector(BaseDetector):
    """Reconstruction error of an LSTM encoder-decoder trained across contexts.

    Parameters
    ----------
    window : int, default 48
        Points per window (48 hourly points: two days).
    hidden : int, default 64
        Units of each LSTM layer.
    layers : int, default 1
        Stacked LSTM layers in the encoder and in the decoder.
    stride : int or None, default None
        Step between consecutive training windows; None means ``window // 4``
        (neighbouring windows overlap by three quarters, which keeps the
        training set, and the fit time, four times smaller than stride 1 at
        little cost in what the network sees). Scoring always uses every window.
    epochs : int, default 12
        Passes over the training windows (see "Training amount" below).
    batch_size : int, default 1024
        Windows per optimisation step.
    max_train_windows : int or None, default 8192
        Most training windows each network sees: a sample of them drawn once
        (seeded by ``seed``, the same on every device), so that the training
        amount (``epochs`` passes over at most this many windows) stays what the
        defaults were chosen for however many contexts a panel has (see
        "Training amount" below). None trains on every window. Every context is
        still scaled, calibrated and scored. Only the sampled windows are copied
        out of the history, which bounds the fit's memory for training too.
    lr : float, default 3e-3
        Adam learning rate: a number > 0, at most float32's largest value / 10
        (3.4e37: Adam's first step is 10 x lr). A rate so large that the training diverges (the loss or the
        weights stop being finite) makes the fit raise a ValueError naming it.
    clusters : int or None, default None
        Train one network per group of contexts with a similar daily shape:
        tslearn's ``TimeSeriesKMeans`` (Euclidean, seeded) on each context's
        scaled daily profile (the mean of its scaled series at each phase of
        ``period``), over the contexts with at least one training window; the
        others join the nearest centre. None trains one global network.
    period : int, default 24
        Points per cycle of the daily profile used by ``clusters``.
    validation_fraction : float, default 0.2
        Share of each context's history, taken at its end, held out from
        training; the reconstruction errors of the windows there calibrate the
        scores. 0 calibrates on the training windows (optimistic).
    device : {"auto", "cpu", "cuda"}, default "auto"
        ``"cuda"`` needs a GPU that both CuPy and PyTorch see; ``"auto"`` uses
        it when they do and the CPU otherwise.
    precision : {"auto", "float32", "mixed"}, default "auto"
        ``"mixed"``: float16 autocast with loss scaling on the GPU, for
        training and scoring; ``"auto"`` is ``"mixed"`` on the GPU and
        ``"float32"`` on the CPU (where ``"mixed"`` also means float32).
        See :data:`TOLERANCE` for how far GPU scores may lie from CPU ones.
    seed : int, default 0
        An integer in [0, 2**32 - 1] (what the clustering's random state takes).
        Seeds the initial weights, the shuffling and the clustering; on the
        CPU the same seed gives the same weights and scores, bit for bit.
    threshold, contamination, per_context
        See :class:`tsanomaly.base.BaseDetector`.

    Attributes
    ----------
    center_, scale_ : ndarray, shape (n_contexts,)
        Median and robust scale (1.4826 MAD, floored) of each context's history.
    history_ : ndarray, shape (n_contexts, max(window - 1, period))
        Last points of each context's history, so ``score`` needs only new points.
    cluster_ : ndarray of int, shape (n_contexts,)
        Network (cluster) of each context: the one whose centre is nearest to
        its daily profile; all 0 without ``clusters``.
    cluster_centers_ : ndarray, shape (n_models, period)
        Scaled daily profile of each cluster's centre.
    err_center_, err_scale_ : ndarray, shape (n_contexts, 2)
        Median and robust scale of each context's held-out errors (newest-point
        error, recent-median error); the pooled ones of its cluster for a
        component with fewer than :data:`MIN_HELD_OUT_ERRORS` effectively
        independent held-out errors (see *Hold-out*); a context of counts has
        a scale of at least half a count (``0.5 / scale_``, scaled units).
    pool_err_center_, pool_err_scale_ : ndarray, shape (n_models, 2)
        The same over each cluster's contexts (used for unseen contexts).
    weights_ : dict of str to ndarray
        Network weights, ``"c{k}.{state_dict name}"`` for cluster ``k``
        (saved in the model file's ``.npz``; no pickle).
    train_loss_ : ndarray, shape (n_models, epochs)
        Mean training loss per epoch (scaled units squared).
    n_train_windows_ : ndarray of int, shape (n_models,)
        Training windows of each network (at most ``max_train_windows``).
    recent_summary_ : str
        ``"median"``: how the second score component summarises the recent
        errors. Model files saved before this attribute existed lack it and
        score with ``"mean"``, the summary their error statistics and
        threshold were calibrated on, so their scores do not change.

    Notes
    -----
    **Model.** An encoder LSTM reads a scaled window; a decoder LSTM started
    from the encoder's final state rebuilds it in reverse order, newest point
    first, as in Malhotra et al.; a linear read-out maps each decoder state to
    a value. Unlike the paper, the decoder is fed no values (neither the true
    previous point in training nor its own output at inference): it cannot
    copy its input, training and inference run the same computation, and the
    decoder is one fused ``nn.LSTM`` call (see
    :class:`tsanomaly.kernels.lstm_torch.LSTMAutoencoder`). Loss: mean squared
    error; optimiser: Adam.

    **Data path.** Each context is scaled by the median and 1.4826 x MAD of
    its history, floored at 1.2533 x its mean absolute deviation (the same
    for Gaussian noise; positive for sparse counts, whose MAD is 0), at
    1e-3 x |median| (a constant context) and at 1 (all zero), so flat and
    sparse contexts work and a context and its 1000x copy scale alike. Windows are
    strided views (``unfold``) of the whole panel at once; a window trains when
    it can be scored (see *Missing values*). The training set is built on
    the device once; each step takes an index slice of a per-epoch
    permutation, with no host-device copy inside the loop.

    **Hold-out.** Split by time, not at random: the last
    ``validation_fraction`` of each context's history is never trained on, and
    the windows lying wholly inside it estimate the error distribution
    (random windows would overlap training windows by up to
    ``window - stride`` points and make the errors look smaller than on new
    data). When that tail is shorter than ``window``, no window fits inside
    it, and the windows that end in it estimate the distribution instead
    (they reach back into the training data, so their errors may look
    smaller than on new data). These stride-1 windows overlap, so a context's
    own median and scale of a score component are used only when its
    held-out errors hold at least :data:`MIN_HELD_OUT_ERRORS` (8) effectively
    independent values: ``n`` newest-point errors count ``n`` (distinct
    points), their recent medians 4/3 x the ``(n + recent - 1) / recent``
    disjoint stretches of ``recent`` points they span; below that the
    component takes the cluster's pooled statistics. (With 8 independent
    Gaussian or Poisson errors, 95% of contexts get a scale above about half
    the true one; with 1 to 6, 5% of them get 0 to 0.45 of it.) Before, a
    10-day hourly history (window 48, ``validation_fraction`` 0.2) held out
    one window per context: a scale of 0 floored at 0.1 x the pooled one, and
    a global threshold of 33 against 2.0 at 14 days; now 2.0 and 1.6. With the
    defaults, the newest-point component has its own statistics from 12 days
    of hourly history on (11 held-out windows), the recent one from 19 days
    (44 windows; 41 are needed).

    **Score.** The window ending at point ``t`` is reconstructed, and its
    error (observed minus reconstructed, scaled units) is summarised twice:
    at its newest point, ``z_t - ẑ_t`` (bursts, drops), and as the median over
    its newest ``max(1, window // 6)`` points (8 for window 48: shifts that
    last hours, such as slow rises or a changed night level; the median of
    the observed ones, the mean of the two middle values for an even count). Each is turned
    into a robust z-score with the median and robust scale of the context's
    held-out errors (1.4826 x MAD, floored at 1.2533 x their mean absolute
    deviation, as the input scaling is: the errors of a mostly-zero context
    are nearly all alike but for its events, and with the MAD alone a single
    event scored about 20; for a context of counts, also at half a count, see
    *Sparse counts and one threshold*), and the point's score is the root mean
    square of the two. Only those newest points are reconstructed: the
    decoder emits the newest point first, so it runs ``window // 6`` steps, not
    ``window`` (the same values bit for bit on the CPU; at 5,000 contexts this
    halved ``score --update``). Scores
    are causal for contexts seen at fit (a point's score depends only on the
    window ending at it, never on later points; for an unseen context see
    below), in units of the context's own normal error, and
    comparable across contexts; higher = more anomalous. (The whole-window
    mean was tried instead of the recent mean: it keeps a short burst's score
    high for a whole window after it, and on make_security_panel data its
    pooled AUC-ROC was about 0.03 lower. The recent mean had the same flaw on
    a smaller scale: a one-hour spike stayed in it for ``window // 6``
    points at 1/8 of its size, and a one-hour burst of 1500 logins gave an
    alert 8 hours long, scores 68.8 then 13.0-13.4 against a threshold of
    1.9. A single spike does not move the median of 8 points, so that alert
    now lasts its hour (68 then 1.1, 0.9, ...), while a shift over more than
    half of the recent points moves it as it moved the mean.)

    **Training amount.** Longer training teaches the network to rebuild
    sustained shifts too, which hides them: on make_security_panel data, 30
    epochs instead of 12 lowered the pooled AUC-ROC by about 0.09. The
    defaults (stride ``window // 4``, 12 epochs, batches of 1024) were chosen
    for that and for a CPU fit of 200 contexts x 720 hours within a minute
    (9,000 training windows); see ``benchmarks/lstm_quality.py``. With every
    window, the optimisation steps would grow with the number of contexts, and
    the network would over-train the same way: at 2,000 contexts (seeds 0, 1)
    the pooled AUC-ROC was 0.835 / 0.823 on all (about 60,000) windows, 0.822 on
    16,384 (seed 0) and 0.886 / 0.875 on ``max_train_windows=8192``, in about
    half the fit time. So the training set is capped at about the size the defaults
    were chosen on, and the fit's training time stops growing with the panel.

    **Missing values.** A window is scored when at least
    :func:`tsanomaly.base.min_observed` (7/8) of its points are observed; a
    missing point enters the network as the context's median (0 in scaled
    units) and is left out of both error summaries, so a point that is itself
    missing scores NaN. This departs on purpose from the first rule (issue 4:
    any window holding a NaN scores NaN), under which one missing bucket
    blanked the ``window`` scores after it (48 hours). On make_security_panel
    data (200 contexts, seeds 0-2, ``benchmarks/lstm_quality.py``) the NaN
    share of the scores fell from 3.9% to 0.2% (the missing points
    themselves), and the pooled AUC-ROC rose from 0.886 / 0.884 / 0.840 to
    0.917 / 0.907 / 0.933 (STL: 0.943 / 0.941 / 0.951), most for
    registration farms (0.90 to 0.94 at seed 0) and slow drips (0.91 to
    0.95). The share is STL's rule for its rolling windows, written once in
    :data:`tsanomaly.base.MIN_OBSERVED_SHARE`. (Smaller networks were tried
    first for the same gap, under the first rule, and were worse: at seed 0
    hidden size 16 gave 0.811 and 32 gave 0.837, against 0.886 at the
    default 64.)

    Training takes the same windows: those with at least ``min_observed``
    observed points, their missing points entering as 0 and left out of the
    loss (the mean squared error over the observed points). Training only on
    windows without a NaN (the first rule) starved the networks of scattered
    gaps: on 40 contexts x 240 hours, window 48, 5% of the points missing at
    random left 44 of 520 training windows, 10% left 1 (silently), and 15%
    none, so the fit was refused although most windows could be scored. The
    fit warns when fewer than half of the training windows that hold data
    are usable.

    **Current figures.** With that training rule, the error-scale floor, the
    recent median and the minimum of held-out errors (above), the same
    benchmark (``benchmarks/lstm_quality.py --only lstm``, 200 contexts,
    seeds 0-2, CPU) gives a pooled AUC-ROC of 0.931 / 0.908 / 0.939 (from
    0.917 / 0.907 / 0.933 just before them): registrations (sparse counts)
    0.946 / 0.944 / 0.946 (from 0.909 / 0.939 / 0.928), registration farms
    0.976 / 0.981 / 0.971 (from 0.941 / 0.970 / 0.947); outages fell, 0.676
    / 0.553 / 0.512 (from 0.672 / 0.615 / 0.590), as did logins at seeds 0
    and 2 (0.839, 0.934 from 0.856, 0.950). The count floor (below) moved
    them again.

    **Unseen contexts** are scaled by their own new data, join the cluster
    whose centre is nearest to their own new daily profile (cluster 0 when the
    new data does not cover every phase), and are standardised with that
    cluster's pooled held-out errors. So is a context that was in the history
    without a single observation (its ``center_`` and ``scale_`` are NaN).
    Their scores are therefore not causal: they depend on the whole scored
    batch (scaling and cluster), so scoring a day at once and hour by hour
    gives different scores for such a context until it is fitted.

    **Two fit steps (Spark).** ``_fit`` is :meth:`_fit_global` (clusters,
    weights, pooled error statistics, from all contexts, taken in sorted label
    order) then :meth:`_fit_contexts` (each context's scaling, history,
    nearest cluster and error statistics, given the global state).
    :func:`tsanomaly.spark.fit` runs the first once on a deterministic sample
    of ``sample_contexts`` contexts and the second in every shard; when the
    sample holds every context the result equals this fit bit for bit on the
    CPU. With a smaller sample, the weights, centres and pooled statistics come
    from the sample only, so they (and every score) differ from a fit on all
    contexts, while each context still gets its own scaling and error statistics.

    **Sparse counts and one threshold.** A context with an event now and then
    (0.03 an hour) reconstructs its zeros almost exactly, so each of its
    single events was many of its own error scales, and with the default
    global threshold a few such contexts set it for all: 16 hourly contexts of
    about 50 events had a threshold of 2.0 alone and 202 beside four sparse
    ones, above their bursts and outages. A context of counts (every observed
    value a whole number >= 0, :func:`tsanomaly.scaling.count_rows`) therefore
    has its error scales floored at half a count
    (:data:`~tsanomaly.scaling.COUNT_SCALE_FLOOR`, the baseline's and STL's
    floor), in scaled units ``0.5 / scale_``: there the threshold is 2.04, and
    the outage and a tripled hour alert. (A floor on the input scale alone
    left 18.6: the error scale is in the same scaled units and cancels it.)
    ``benchmarks/lstm_quality.py --only lstm`` (200 contexts, seeds 0-2) gives
    a pooled AUC-ROC of 0.936 / 0.906 / 0.942 with the floor, against 0.931 /
    0.908 / 0.939 without (registrations 0.959 / 0.941 / 0.960 from 0.946 /
    0.944 / 0.946; outages 0.660 / 0.478 / 0.517 from 0.676 / 0.553 / 0.512),
    and ``tsanomaly demo --detector lstm`` a precision of 0.59 and a recall of
    0.73, against 0.25 and 0.53.

    **Devices.** On the CPU each scoring pass has the same power-of-two shape
    (:func:`~tsanomaly.kernels.lstm_torch.reconstruct` with padding), which
    makes a context's scores bit-identical whichever contexts share the panel.
    On the GPU, batches are large and unpadded, and scores agree with the CPU
    within :data:`TOLERANCE`.

    References
    ----------
    P. Malhotra, A. Ramakrishnan, G. Anand, L. Vig, P. Agarwal, G. Shroff,
    "LSTM-based Encoder-Decoder for Multi-sensor Anomaly Detection",
    ICML Anomaly Detection Workshop, 2016. arXiv:1607.00148.

    Examples
    --------
    >>> from tsanomaly.datasets import make_security_panel
    >>> data = make_security_panel(n_contexts=50, n_days=28, seed=0)
    >>> history, new = data.split("2024-01-22")
    >>> det = LSTMAutoencoderDetector(device="cpu").fit(history.panels["logins"])  # doctest: +SKIP
    >>> alerts = det.alerts(new.panels["logins"])  # doctest: +SKIP
    """

    # The arithmetic of scoring, not what was fitted: a model fitted in float32 may score in mixed precision.
    _scoring_params = ("device", "precision")
    explanation_columns = ("expected", "observed", "cluster")
    explanation_types = {"expected": "double", "observed": "double", "cluster": "bigint"}
    #: Fitted attributes with one row per context (see tsanomaly.spark); the rest
    #: (``cluster_centers_``, weights, pooled error statistics) is global state,
    #: whatever its first axis happens to measure.
    per_context_attributes = ("center_", "scale_", "history_", "cluster_", "err_center_", "err_scale_")
    #: The fit raises ValueError on a history shorter than :meth:`min_fit_times`.
    _fit_raises_when_short = True

    def __init__(
        self,
        window=48,
        hidden=64,
        layers=1,
        stride=None,
        epochs=12,
        batch_size=1024,
        max_train_windows=8192,
        lr=3e-3,
        clusters=None,
        period=24,
        validation_fraction=0.2,
        device="auto",
        precision="auto",
        seed=0,
        threshold="quantile",
        contamination=0.001,
        per_context=False,
    ):
        # The one step beyond storing: without PyTorch, say what to install now rather
        # than at fit.
        _import_torch()
        self.window = window
        self.hidden = hidden
        self.layers = layers
        self.stride = stride
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_train_windows = max_train_windows
        self.lr = lr
        self.clusters = clusters
        self.period = period
        self.validation_fraction = validation_fraction
        self.device = device
        self.precision = precision
        self.seed = seed
        self.threshold = threshold
        self.contamination = contamination
        self.per_context = per_context

    # -------------------------------------------------------------- parameters
    def _validate(self) -> None:
        def integer(name, minimum):
            value = getattr(self, name)
            if not is_int(value) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        integer("window", 2)
        integer("hidden", 1)
        integer("layers", 1)
        integer("epochs", 0)
        integer("batch_size", 1)
        integer("period", 1)
        if self.stride is not None:
            integer("stride", 1)
        if self.max_train_windows is not None:
            integer("max_train_windows", 1)
        if self.clusters is not None:
            integer("clusters", 1)
        # An infinite learning rate (1e400 read from JSON is inf) turns every weight, and so
        # every score, into NaN after the first step; one above _MAX_LR could not even be
        # handed to the optimiser (a RuntimeError inside PyTorch). A finite rate can still make
        # the training diverge: the fit then raises (see _check_trained).
        if not is_finite_real(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.lr > _MAX_LR:
            raise ValueError(f"lr must be at most {_MAX_LR:.7g} (Adam's first step, 10 x lr, must be a float32), "
                             f"got {self.lr!r}")
        vf = self.validation_fraction
        if not is_finite_real(vf) or not 0 <= vf < 1:
            raise ValueError(f"validation_fraction must be a number in [0, 1), got {vf!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        # tslearn's k-means (NumPy's legacy seeding) takes seeds below 2**32, PyTorch's below 2**64.
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.seed > _MAX_SEED:
            raise ValueError(f"seed must be at most 2**32 - 1 = {_MAX_SEED}, got {self.seed!r}")

    def kept_width(self) -> int:
        """The kept history's full width (see :meth:`BaseDetector.kept_width`): the ``window - 1``
        points before a new one that its window reconstructs, and at least one ``period``, on
        which a context without fitted scaling (none of its points observed at fit) is scaled
        once updates bring its observations. (On the window's 11 points of a daily cycle such a
        context was flagged 52 hours of 127 in an hour-by-hour loop; on a day's 24, 3, as in one
        call over all the hours.)"""
        return max(int(self.window) - 1, int(self.period))

    def min_fit_times(self) -> int:
        """Fewest time steps for a finite training score (see :meth:`BaseDetector.min_fit_times`):
        the training part, what ``validation_fraction`` leaves of the history, must hold one
        ``window`` (the shortest history :meth:`_split` accepts)."""
        self._validate()
        window, fraction = int(self.window), float(self.validation_fraction)
        # Below (window - 1) / (1 - fraction) points the training part, n - round(fraction * n)
        # <= n (1 - fraction) + 1/2, is shorter than a window: search upwards from there.
        n_times = max(window, int((window - 1) / (1.0 - fraction)))
        while self._training_times(n_times) < window:
            n_times += 1
        return n_times

    def _training_times(self, n_times: int) -> int:
        """Points of a history of ``n_times`` left for training after the validation tail."""
        return n_times - int(round(self.validation_fraction * n_times))

    def _train_sample(self, n: int, k: int):
        """Which of network ``k``'s ``n`` training windows it trains on: ``None`` for all of them,
        else the sorted positions of at most ``max_train_windows`` (a CPU tensor of int64),
        drawn once and seeded by ``seed + k``."""
        torch = _import_torch()
        if self.max_train_windows is None or n <= int(self.max_train_windows):
            return None
        generator = torch.Generator().manual_seed(int(self.seed) + k)  # on the CPU: the same rows on every device
        return torch.randperm(n, generator=generator)[: int(self.max_train_windows)].sort().values

    def _stride(self) -> int:
        return max(1, self.window // 4) if self.stride is None else int(self.stride)

    def _recent(self) -> int:
        """Newest points whose median error is the second score component (8 for window 48)."""
        return max(1, int(self.window) // _RECENT_DIVISOR)

    def _recent_summary(self) -> str:
        """``recent_summary_``: ``"median"`` for a fit since it exists, ``"mean"`` for a model
        file saved before (its error statistics, hence its threshold, were calibrated on it)."""
        summary = vars(self).get("recent_summary_", "mean")
        if summary not in _RECENT_SUMMARIES:  # a damaged state that no load checked (a Spark model's)
            raise ValueError(f"recent_summary_ is {summary!r}, not one of {_RECENT_SUMMARIES}: the model is damaged")
        return summary

    @staticmethod
    def _warn_few_training_windows(n_usable: int, n_with_data: int, window: int) -> None:
        """Warn when missing values leave out most of the training windows.

        ``n_usable`` windows have at least ``min_observed(window)`` observed points
        (the networks train on them, or on a sample of them); ``n_with_data`` have at
        least one. Below half, the networks learn from a small remainder of the
        history (scattered gaps: at 15% missing, window 48, about 40% of the windows
        are left), which the fit used to do silently.
        """
        if n_usable < _MIN_USABLE_SHARE * n_with_data:
            warnings.warn(
                f"LSTMAutoencoderDetector: only {n_usable} of the {n_with_data} training windows with data "
                f"({n_usable / n_with_data:.0%}) have at least {min_observed(window)} of their {window} points "
                "observed (the share scoring needs; the others are left out of training): the networks learn from a "
                "small part of the history; fill the gaps (fill='zero' for counts) or use a smaller window",
                UserWarning,
                stacklevel=4,
            )

    def _check_trained(self, k: int, loss, arrays: dict) -> None:
        """ValueError naming ``lr`` when network ``k``'s training loss or weights are not finite.

        The inputs are clipped to +-``_INPUT_CLIP``, so only the optimisation can diverge:
        with lr=1e20 every weight became NaN, and the fit went on to a CalibrationWarning
        that blamed the history's length, with every score NaN.
        """
        if np.isfinite(loss).all() and all(np.isfinite(a).all() for a in arrays.values()):
            return
        raise ValueError(
            f"the training of network {k} diverged (its loss or weights are not finite) with lr={self.lr!r}; "
            "use a smaller learning rate (the default is 3e-3)"
        )

    def _resolve_torch_device(self) -> str:
        """Check that PyTorch can serve ``self.device_`` (which the base chose from CuPy).

        ``"auto"`` falls back to the CPU when CuPy sees a GPU that this PyTorch
        build cannot use; an explicit ``"cuda"`` raises instead.
        """
        torch = _import_torch()
        if self.device_ == "cuda" and not torch.cuda.is_available():
            if self.device == "cuda":
                raise backend.GPUUnavailableError(
                    "device='cuda' was asked for: CuPy sees a GPU but PyTorch cannot use it "
                    f"(torch {torch.__version__}: torch.cuda.is_available() is False - a CPU-only build?). "
                    "Install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/) or use device='cpu'."
                )
            self.device_ = "cpu"
        return self.device_

    def _precision(self) -> str:
        """``"float32"`` or ``"mixed"``, from ``precision`` and the device in use."""
        if self.precision == "auto":
            return "mixed" if self.device_ == "cuda" else "float32"
        return self.precision

    def _score_batches(self) -> tuple[int, bool]:
        """(windows per forward pass, whether every pass is padded to that size) when scoring.

        On the CPU every pass has one power-of-two shape, which makes a
        window's float32 reconstruction independent of the windows beside it:
        a context scores bit for bit the same alone or in any panel, so
        contexts can be sharded. On the GPU, large unpadded batches for speed.
        """
        if self.device_ == "cpu":
            return _CPU_SCORE_BATCH, True
        return _GPU_SCORE_BATCH, False

    # -------------------------------------------------------------- torch plumbing
    def _tensor(self, x, dtype=None):
        """NumPy or CuPy array -> torch tensor on the fitted device (zero-copy where possible)."""
        torch = _import_torch()
        if backend.is_device_array(x):
            tensor = torch.from_dlpack(x)
        else:
            array = np.ascontiguousarray(x)
            if not array.flags.writeable:
                # A tensor is a writable view; a read-only array (pandas' copy-on-write output,
                # say) is copied so that nothing can write through to the caller's data.
                array = array.copy()
            tensor = torch.from_numpy(array)
        tensor = tensor.to(self.device_)
        return tensor if dtype is None else tensor.to(dtype)

    def _array(self, tensor):
        """torch tensor -> array of the fitted device (NumPy on the CPU, CuPy on the GPU)."""
        if tensor.device.type == "cuda":
            # detach: DLPack cannot export a tensor that requires grad
            return backend.array_module("cuda").from_dlpack(tensor.detach().contiguous())
        return tensor.detach().numpy()

    def _build_models(self) -> list:
        """The networks (one per cluster), rebuilt from ``weights_`` with ``load_state_dict``."""
        kernels = _kernels()
        self._models = []
        for k in range(self.n_models_):
            prefix = f"c{k}."
            arrays = {name[len(prefix) :]: value for name, value in self.weights_.items() if name.startswith(prefix)}
            model = kernels.build_model(self.hidden, self.layers, self.seed, self.device_)
            self._models.append(kernels.load_model_arrays(model, arrays))
        return self._models

    def _restore(self) -> None:
        self._resolve_torch_device()
        self._build_models()

    def _check_fitted_state(self) -> None:
        """The base's checks, and ``recent_summary_`` one of ``"median"``, ``"mean"`` where the
        file has it (files saved before it existed score with ``"mean"``, see :meth:`_recent_summary`)."""
        super()._check_fitted_state()
        summary = vars(self).get("recent_summary_", "mean")
        if not isinstance(summary, str) or summary not in _RECENT_SUMMARIES:
            raise ValueError(
                f"LSTMAutoencoderDetector's fitted recent_summary_ is {summary!r}, not one of "
                f"{_RECENT_SUMMARIES}: the file is damaged"
            )

    def _fitted_state_kinds(self) -> dict:
        """Checked at load, before ``_restore`` builds the networks (see BaseDetector._fitted_state_kinds)."""
        per_model = ("matrix", "n_models_")
        return {
            "n_models_": "int", "cluster_centers_": per_model, "weights_": "arrays", "train_loss_": "array",
            "n_train_windows_": ("vector", "n_models_"), "pool_err_center_": per_model, "pool_err_scale_": per_model,
            "center_": "vector", "scale_": "vector", "history_": "matrix", "cluster_": "vector",
            "err_center_": "matrix", "err_scale_": "matrix",
        }

    # -------------------------------------------------------------- fit
    def _fit(self, values, panel: Panel):
        # The same two steps as tsanomaly.spark.fit, so that a Spark fit whose sample
        # holds every context equals this one context by context.
        self._fit_global(values, panel)
        return self._fit_contexts(values, panel)

    def _split(self, n_times: int) -> tuple[int, int]:
        """``(n_val, n_train_times)`` of a history of ``n_times`` points; raises when too short."""
        L = int(self.window)
        n_train_times = self._training_times(n_times)
        n_val = n_times - n_train_times
        if n_train_times < L:
            raise ValueError(
                f"the history has {n_times} points, {n_train_times} of them for training "
                f"(validation_fraction={self.validation_fraction}), but window={L} needs at least {L}; "
                "fit on a longer history or use a smaller window"
            )
        return n_val, n_train_times

    def _first_held_out(self, n_val: int, n_train_times: int) -> int:
        """First column of the window errors that calibrates the scores (the held-out windows)."""
        L = int(self.window)
        if n_val == 0:
            return 0
        if n_val >= L:
            return n_train_times
        return max(0, n_train_times - L + 1)  # a tail shorter than a window: the windows that end in it

    def _fit_global(self, values, panel: Panel) -> None:
        """Learn the state shared by all contexts: clusters, network weights, pooled error statistics.

        The first of the two fit steps (``_fit`` runs both; :func:`tsanomaly.spark.fit`
        runs this one once, on a sample of contexts, and :meth:`_fit_contexts` in
        every shard). Sets ``cluster_centers_``, ``n_models_``, ``weights_``,
        ``train_loss_``, ``n_train_windows_``, ``pool_err_center_`` and
        ``pool_err_scale_``. The k-means and the training windows take the
        contexts in sorted label order, so the result does not depend on the
        order of the panel's rows.
        """
        self._validate()
        torch = _import_torch()
        kernels = _kernels()
        self._resolve_torch_device()
        values = backend.to_device(values, self.device_)
        n_ctx, n_times = values.shape
        L = int(self.window)
        n_val, n_train_times = self._split(n_times)
        self.recent_summary_ = "median"
        center, scale = robust_center_scale(values)
        z = self._scaled(values, center, scale)  # float64 (n_ctx, n_times)
        order = _canonical_order(getattr(panel, "contexts", None), n_ctx)

        # Training windows: wholly before the held-out tail, every `stride` points, with at least
        # min_observed(L) observed points (the windows scoring accepts; their missing points enter
        # the network as 0 and are left out of the loss); taken row by row in canonical order.
        # Only the windows a network trains on are copied out of the strided view: the sample is
        # drawn among the positions of the usable windows first, so a capped fit of a large panel
        # never holds all of them.
        train_view = z[:, :n_train_times].unfold(1, L, self._stride())  # (n_ctx, n_w, L), a view
        n_observed = (~torch.isnan(z[:, :n_train_times])).unfold(1, L, self._stride()).sum(dim=2)  # (n_ctx, n_w)
        usable = n_observed >= min_observed(L)  # (n_ctx, n_w)
        trainable = usable.any(dim=1).cpu().numpy()  # contexts with a training window
        if not trainable.any():
            raise ValueError(
                f"no context has a training window: every stretch of window={L} points before the "
                f"held-out tail (the first {n_train_times} of {n_times}) has fewer than {min_observed(L)} "
                "observed points; fit on a history with fewer gaps, fill them (fill='zero' for counts) "
                "or use a smaller window"
            )
        self._warn_few_training_windows(int(usable.sum()), int((n_observed > 0).sum()), L)
        del n_observed

        # The clusters are drawn from the contexts that train the networks. A context without a
        # training window (no data in the history, say) has a made-up profile (0 where nothing
        # was observed): k-means gave such contexts a centre of their own, whose network then
        # had nothing to train on, and unseen contexts near it were scored by untrained weights.
        profiles = self._profiles(z)
        self.cluster_centers_ = self._cluster_centers(profiles[order[trainable[order]]])
        cluster = self._nearest_cluster(profiles)  # per row of `values`
        used = np.unique(cluster[trainable])
        if len(used) < self.cluster_centers_.shape[0]:
            # k-means can still leave a centre that no trainable context is nearest to.
            warnings.warn(
                f"LSTMAutoencoderDetector: {self.cluster_centers_.shape[0] - len(used)} of the "
                f"{self.cluster_centers_.shape[0]} clusters hold no context with a training window and "
                f"are dropped: {len(used)} networks are trained",
                UserWarning,
                stacklevel=3,
            )
            self.cluster_centers_ = self.cluster_centers_[used]  # still numbered by size
            cluster = self._nearest_cluster(profiles)  # the trainable contexts keep their centres
        self.n_models_ = int(self.cluster_centers_.shape[0])
        order_t = self._tensor(order)
        weights, losses, counts = {}, [], []
        for k in range(self.n_models_):
            rows_k = order_t[self._tensor(cluster[order] == k)]  # network k's rows, canonical order
            row_pos, window_pos = torch.nonzero(usable[rows_k], as_tuple=True)  # row-major
            keep = self._train_sample(len(row_pos), k)
            if keep is not None:
                keep = keep.to(row_pos.device)
                row_pos, window_pos = row_pos[keep], window_pos[keep]
            windows = train_view[rows_k[row_pos], window_pos]  # (n_windows, L), a copy
            windows = windows.clamp(-_INPUT_CLIP, _INPUT_CLIP).to(torch.float32).contiguous()  # NaN stays NaN
            model = kernels.build_model(self.hidden, self.layers, self.seed + k, self.device_)
            with _training_threads(self.device_):
                losses.append(
                    kernels.train_model(
                        model,
                        windows,
                        epochs=int(self.epochs),
                        batch_size=int(self.batch_size),
                        lr=float(self.lr),
                        seed=int(self.seed) + k,
                        precision=self._precision(),
                    )
                )
            counts.append(windows.shape[0])
            arrays = kernels.model_arrays(model)
            self._check_trained(k, losses[-1], arrays)
            weights.update({f"c{k}.{name}": value for name, value in arrays.items()})
            del windows
        del train_view, usable
        self.weights_ = weights
        self.train_loss_ = np.stack(losses)
        self.n_train_windows_ = np.asarray(counts, dtype=np.int64)
        self._build_models()  # the networks rebuilt from weights_, as every later step sees them

        # The errors of the held-out windows give the pooled statistics: only those windows are
        # reconstructed here (column j of `held_out` is the window starting at first + j).
        first = self._first_held_out(n_val, n_train_times)
        held_out = self._window_errors(z[:, first:], self._tensor(cluster))
        self.pool_err_center_, self.pool_err_scale_ = self._pooled_error_stats(held_out, cluster)
        # _fit_contexts on the same values (as in _fit) reuses the scaling and clusters.
        self._fit_cache = (values, center, scale, cluster)

    def _fit_contexts(self, values, panel: Panel):
        """Per-context state given the global state of :meth:`_fit_global`; returns the training scores.

        Sets ``center_``, ``scale_`` (each context's own scaling), ``history_``,
        ``cluster_`` (the cluster whose centre is nearest to the context's daily
        profile), ``err_center_`` and ``err_scale_``; each row depends only on
        its own context and the global state, so shards of contexts can be fitted
        apart. Never changes the global state.
        """
        self._validate()
        self._resolve_torch_device()
        values = backend.to_device(values, self.device_)
        cache = self.__dict__.pop("_fit_cache", None)
        n_ctx, n_times = values.shape
        L = int(self.window)
        n_val, n_train_times = self._split(n_times)
        if cache is not None and cache[0] is values:
            _, center, scale, cluster = cache
            z = self._scaled(values, center, scale)
        else:
            center, scale = robust_center_scale(values)
            z = self._scaled(values, center, scale)
            cluster = self._nearest_cluster(self._profiles(z))
        # A context without any observation has no scaling of its own (robust_center_scale gives
        # 0 and 1): NaN marks it, so that scoring scales it by its new data, as an unseen context.
        # With 0 and 1 its raw counts were read as scaled units, far beyond every threshold.
        xp = backend.array_module(values)
        unobserved = ~xp.isfinite(values).any(axis=1)
        self.center_ = xp.where(unobserved, xp.nan, center)
        self.scale_ = xp.where(unobserved, xp.nan, scale)
        self.history_ = values[:, max(0, n_times - self.kept_width()) :].copy()
        self.cluster_ = cluster
        torch = _import_torch()
        first = self._first_held_out(n_val, n_train_times)
        self.err_center_, self.err_scale_ = np.empty((n_ctx, 2)), np.empty((n_ctx, 2))

        count_floor = _count_error_floor(values, scale)

        def held_out_stats(errors, block):
            # Each context's statistics come from its own held-out windows (and the pooled ones),
            # so a block is standardised as soon as it is reconstructed.
            err_center, err_scale = self._context_error_stats(errors[:, first:], cluster[block])
            self.err_center_[block] = err_center
            self.err_scale_[block] = np.maximum(err_scale, count_floor[block, None])
            return self.err_center_[block], self.err_scale_[block]

        out = torch.full((n_ctx, n_times), float("nan"), dtype=torch.float64, device=z.device)
        self._standardised_windows(z, cluster, held_out_stats, into=out[:, L - 1 :])
        return self._array(out)

    @staticmethod
    def _row_blocks(n_rows: int, n_windows: int):
        """Slices of rows whose windows (``n_windows`` per row) number about ``_MAX_SCORE_WINDOWS``."""
        step = max(1, _MAX_SCORE_WINDOWS // max(1, n_windows))
        return [slice(lo, min(lo + step, n_rows)) for lo in range(0, n_rows, step)]

    def _standardised_windows(self, z, cluster, error_stats, into) -> None:
        """Score every window of ``z``, reconstructing and standardising a block of contexts at a time.

        The errors of the whole panel are never held at once (two float64 per window: 1 GiB
        at 100,000 contexts x 720 hours), only those of about ``_MAX_SCORE_WINDOWS`` windows.

        Parameters
        ----------
        z : torch.Tensor, shape (n_contexts, n_times), float64
            Scaled series on the device (NaN = missing).
        cluster : numpy.ndarray of int64, shape (n_contexts,)
            Network of each row.
        error_stats : callable
            ``error_stats(errors, block)`` -> ``(center, scale)``, each of shape (n_block, 2):
            how the errors of the rows ``block`` (a slice; ``errors`` of shape (n_block,
            n_windows, 2), see :meth:`_window_errors`) are standardised.
        into : torch.Tensor, shape (n_contexts, n_times - window + 1), float64
            Receives the scores (see :meth:`_standardise`); column j is the window starting at j.
        """
        cluster_t = self._tensor(cluster)
        for block in self._row_blocks(z.shape[0], into.shape[1]):
            errors = self._window_errors(z[block], cluster_t[block])
            into[block] = self._standardise(errors, *error_stats(errors, block))

    def _scaled(self, values, center, scale):
        """``(values - center) / scale`` per row, as a float64 torch tensor on the device."""
        torch = _import_torch()
        x = self._tensor(values, torch.float64)
        return (x - self._tensor(center, torch.float64)[:, None]) / self._tensor(scale, torch.float64)[:, None]

    def _profiles(self, z):
        """Scaled daily profile of each row of ``z`` (phase 0 at the first column), NaN-free.

        A phase a context never shows gets that context's mean (neutral), a context
        with no finite value the profile 0.
        """
        profiles = _daily_profiles(z.cpu().numpy(), int(self.period), phase0=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            filled = np.where(np.isnan(profiles), np.nanmean(profiles, axis=1, keepdims=True), profiles)
        return np.nan_to_num(filled, nan=0.0)

    def _cluster_centers(self, profiles):
        """Centres of the clusters (scaled daily profiles), shape (n_models, period).

        Without ``clusters``: one row, the mean profile. With ``clusters=k``:
        tslearn's seeded k-means, clusters numbered by size, largest first (so
        the numbering does not depend on k-means' internal order); a cluster left
        empty keeps its centre.
        """
        n_ctx = profiles.shape[0]
        if self.clusters is None:
            return profiles.mean(axis=0, keepdims=True)
        k = int(self.clusters)
        if k > n_ctx:
            raise ValueError(
                f"clusters={k} exceeds the number of contexts with a training window ({n_ctx}); use at most {n_ctx}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tslearn warns at import that h5py is absent
            from tslearn.clustering import TimeSeriesKMeans

            km = TimeSeriesKMeans(n_clusters=k, metric="euclidean", random_state=int(self.seed), n_init=1)
            labels = km.fit_predict(profiles[:, :, None]).astype(np.int64)
        centers = km.cluster_centers_[:, :, 0].astype(np.float64)
        order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
        return centers[order]

    def _nearest_cluster(self, profiles):
        """Cluster of each row: the centre nearest to its profile (Euclidean; ties to the lower number).

        Each row's cluster depends only on its own profile and the centres, so
        contexts fitted in different shards get the cluster they get together.
        """
        centers = np.asarray(self.cluster_centers_, dtype=np.float64)
        if centers.shape[0] == 1:
            return np.zeros(profiles.shape[0], dtype=np.int64)
        dist = ((profiles[:, None, :] - centers[None]) ** 2).sum(axis=2)
        return np.argmin(dist, axis=1).astype(np.int64)

    # -------------------------------------------------------------- errors and scores
    def _window_errors(self, z, cluster, with_expected: bool = False):
        """Reconstruction errors of every window of ``z`` (stride 1).

        Parameters
        ----------
        z : torch.Tensor, shape (n_contexts, n_times), float64
            Scaled series on the device (NaN = missing).
        cluster : torch.Tensor of int64, shape (n_contexts,)
            Network of each row.
        with_expected : bool, default False
            Also return the reconstructions (only explanations need them; a
            fit of 100,000 contexts x 720 h would hold 0.5 GiB of them).

        Returns
        -------
        errors : torch.Tensor, shape (n_contexts, n_times - window + 1, 2), float64
            For the window starting at column j (ending at ``j + window - 1``):
            the error of its newest point and the median error of its newest
            ``max(1, window // 6)`` points (the mean for a model file saved
            before ``recent_summary_`` existed; observed minus reconstructed,
            scaled units), over observed points only; NaN where fewer than
            ``min_observed(window)`` points of the window are observed, and the
            first also where its newest point is missing.
        expected : torch.Tensor, shape (n_contexts, n_times - window + 1), float64
            Only with ``with_expected``: the reconstruction of each window's
            newest point (scaled units).
        """
        torch = _import_torch()
        kernels = _kernels()
        L = int(self.window)
        n_ctx, n_times = z.shape
        n_win = max(0, n_times - L + 1)
        errors = torch.full((n_ctx, n_win, 2), float("nan"), dtype=torch.float64, device=z.device)
        expected = torch.full((n_ctx, n_win), float("nan"), dtype=torch.float64, device=z.device) if with_expected else None
        if n_win == 0 or n_ctx == 0:
            return (errors, expected) if with_expected else errors
        batch, pad = self._score_batches()
        recent = self._recent()
        rows_per_chunk = max(1, _MAX_SCORE_WINDOWS // n_win)
        for k in range(self.n_models_):
            rows = torch.nonzero(cluster == k).flatten()
            for lo in range(0, len(rows), rows_per_chunk):
                chunk = rows[lo : lo + rows_per_chunk]
                windows = z[chunk].unfold(1, L, 1).reshape(-1, L)  # (n_rows * n_win, L), a copy
                unscored = (~torch.isnan(windows)).sum(dim=1) < min_observed(L)
                # A missing point enters the network as the context's median (0 in scaled
                # units) and is left out of the error, which only observed points define.
                inputs = torch.nan_to_num(windows, nan=0.0).clamp_(-_INPUT_CLIP, _INPUT_CLIP).to(torch.float32)
                # Both errors (and the explanations' expected value) read only the newest `recent`
                # points, so only those are reconstructed: the decoder, which emits the newest
                # point first, runs `recent` steps instead of L (8 of 48; same values on the CPU).
                recon = kernels.reconstruct(
                    self._models[k],
                    inputs,
                    batch_size=batch,
                    precision=self._precision(),
                    pad_batches=pad,
                    newest=recent,
                ).to(torch.float64)
                tail = windows[:, -recent:] - recon  # the newest `recent` points; NaN where missing
                summary = tail.nanmean(dim=1) if self._recent_summary() == "mean" else _nanmedian_rows(tail)
                err = torch.stack([tail[:, -1], summary], dim=1)
                errors[chunk] = err.masked_fill(unscored[:, None], float("nan")).reshape(len(chunk), n_win, 2)
                if with_expected:
                    expected[chunk] = recon[:, -1].reshape(len(chunk), n_win)
        return (errors, expected) if with_expected else errors

    def _pooled_error_stats(self, held_out, cluster):
        """Median and robust scale of each cluster's held-out errors, pooled over its contexts.

        Parameters
        ----------
        held_out : torch.Tensor, shape (n_contexts, n_windows, 2)
        cluster : numpy.ndarray of int, shape (n_contexts,)

        Returns
        -------
        pool_center, pool_scale : numpy.ndarray, shape (n_models, 2)
            0 and 1 for a cluster without finite errors.
        """
        errs = held_out.cpu().numpy()
        pool_center = np.zeros((self.n_models_, 2))
        pool_scale = np.ones((self.n_models_, 2))
        for k in range(self.n_models_):
            pooled = errs[cluster == k].reshape(-1, 2)
            pooled = pooled[np.isfinite(pooled).all(axis=1)]
            if len(pooled):
                pool_center[k] = np.median(pooled, axis=0)
                pool_scale[k] = np.maximum(robust_sigma(np.abs(pooled - pool_center[k]), axis=0), 1e-12)
        return pool_center, pool_scale

    def _context_error_stats(self, held_out, cluster):
        """Median and robust scale of each context's held-out errors, shape (n_contexts, 2) each.

        The scale is :func:`tsanomaly.scaling.robust_sigma` (1.4826 x MAD, floored
        at 1.2533 x the mean absolute deviation), the rule of the input scaling: the
        held-out errors of a mostly-zero context are nearly all alike (MAD about
        0.001 scaled units) but for its occasional events, and with the MAD alone
        each single event scored about 20. A component with fewer than
        :data:`MIN_HELD_OUT_ERRORS` effectively independent held-out errors (see
        :meth:`_independent_errors`; none at all where every window had too many
        NaN) takes its cluster's pooled statistics, and every scale is floored at
        ``_ERR_SCALE_FLOOR_FRACTION`` of the cluster's pooled scale.
        """
        errs = held_out.cpu().numpy()
        center = nanmedian(errs, axis=1)  # contexts without finite errors give NaN
        scale = robust_sigma(np.abs(errs - center[:, None, :]), axis=1)
        pool_center = np.asarray(self.pool_err_center_)[cluster]
        pool_scale = np.asarray(self.pool_err_scale_)[cluster]
        few = self._independent_errors(errs) < MIN_HELD_OUT_ERRORS
        missing = few | ~(np.isfinite(center) & np.isfinite(scale))
        center = np.where(missing, pool_center, center)
        scale = np.where(missing, pool_scale, scale)
        return center, np.maximum(scale, _ERR_SCALE_FLOOR_FRACTION * pool_scale)

    def _independent_errors(self, errs):
        """Effectively independent held-out errors of each context and component, shape (n_contexts, 2).

        Stride-1 windows overlap: the newest-point errors of ``n`` windows lie at ``n``
        distinct points and count ``n``; their recent medians summarise ``recent``
        points each, ``n + recent - 1`` distinct ones together, which hold
        ``(n + recent - 1) / recent`` disjoint stretches, and count 4/3 of that
        (``_OVERLAP_CREDIT``; ``n`` when ``recent`` is 1). The 4/3 is measured: for
        ``recent`` 2, 4 and 8, the medians of 11, 21 and 41 windows (6 stretches) of
        independent Gaussian errors give 95% of contexts a scale above 0.52, 0.55 and
        0.55 of the true one, as 8 independent errors do (0.54). Counting the
        stretches alone left the 21-day histories of ``benchmarks/lstm_quality.py``
        (54 held-out windows, 7.6 stretches) on pooled statistics, at a cost of
        about 0.01 in pooled AUC-ROC.
        """
        n = np.isfinite(errs).sum(axis=1).astype(np.float64)  # (n_contexts, 2)
        recent = self._recent()
        if recent > 1:
            n[:, 1] = np.where(n[:, 1] > 0, _OVERLAP_CREDIT * (n[:, 1] + recent - 1) / recent, 0.0)
        return n

    def _standardise(self, errors, center, scale):
        """Errors -> scores: root mean square of the two robust z-scores (higher = more anomalous).

        ``errors`` (n, n_windows, 2) tensor; ``center``, ``scale`` (n, 2) arrays.
        """
        torch = _import_torch()
        c = self._tensor(np.asarray(center), torch.float64)[:, None, :]
        s = self._tensor(np.asarray(scale), torch.float64)[:, None, :]
        z = errors - c  # one temporary the size of `errors`, then worked on in place
        return z.div_(s).square_().mean(dim=2).sqrt_()

    # -------------------------------------------------------------- score
    def _with_past(self, values, panel: Panel, rows: np.ndarray):
        """The new values after each context's kept history (see ``with_kept_history``) and the grid steps since the fit."""
        return self.with_kept_history(values, panel, rows, self.history_), self.steps_after_fit(panel)

    def _row_state(self, x, rows: np.ndarray, steps: int, n_new: int):
        """Scaling, error standardisation and cluster of each row; unseen contexts start cold.

        ``x`` is the new data after the kept history (:meth:`_with_past`), its last ``n_new``
        columns new. A context without fitted scaling (unseen, or without any observation at
        fit) is scaled on what ``x`` holds of it: the new data, and the observations updates
        have brought into its kept history since. (Scaled on each batch alone, such a context
        had its single points scaled on themselves in an hour-by-hour loop: 81 of 91 hours
        flagged where one call flagged none.)

        Returns NumPy arrays: center, scale (n,), err_center, err_scale (n, 2), cluster (n,).
        """
        rows = np.asarray(rows)
        safe = np.maximum(rows, 0)
        center = backend.to_numpy(self.center_)[safe].astype(np.float64)
        scale = backend.to_numpy(self.scale_)[safe].astype(np.float64)
        # A fitted context without data at fit (NaN scaling) starts cold like an unseen one.
        seen = (rows >= 0) & np.isfinite(center)
        err_center = np.asarray(self.err_center_)[safe].astype(np.float64)
        err_scale = np.asarray(self.err_scale_)[safe].astype(np.float64)
        cluster = np.asarray(self.cluster_)[safe].astype(np.int64)
        if not seen.all():
            new = backend.to_numpy(x)[~seen]
            new_center, new_scale = robust_center_scale(new)
            center[~seen], scale[~seen] = new_center, new_scale
            new_cluster = np.zeros(len(new), dtype=np.int64)
            if self.n_models_ > 1:
                # Phase of x's first column: the first new point lies at n_fit_times_ - 1 + steps.
                phase0 = (self.n_fit_times_ - 1 + steps - (x.shape[1] - n_new)) % int(self.period)
                profiles = _daily_profiles((new - new_center[:, None]) / new_scale[:, None], int(self.period), phase0)
                complete = np.isfinite(profiles).all(axis=1)
                centers = np.asarray(self.cluster_centers_)
                dist = ((profiles[complete][:, None, :] - centers[None]) ** 2).sum(axis=2)
                new_cluster[complete] = np.argmin(dist, axis=1)
            cluster[~seen] = new_cluster
            err_center[~seen] = np.asarray(self.pool_err_center_)[new_cluster]
            err_scale[~seen] = np.maximum(np.asarray(self.pool_err_scale_)[new_cluster],
                                          _count_error_floor(new, new_scale)[:, None])
        return center, scale, err_center, err_scale, cluster

    def _score(self, values, panel: Panel, rows: np.ndarray):
        self._validate()
        torch = _import_torch()
        x, steps = self._with_past(values, panel, rows)
        center, scale, err_center, err_scale, cluster = self._row_state(x, rows, steps, values.shape[1])
        # Only the windows that end on new points: the kept history is a cycle long (for the scaling
        # of contexts without fitted scaling), longer than the window - 1 points they need.
        x = x[:, max(0, x.shape[1] - values.shape[1] - (int(self.window) - 1)):]
        z = self._scaled(x, center, scale)
        n_windows = max(0, z.shape[1] - int(self.window) + 1)  # n_past + n_new - L + 1
        scores = torch.empty((z.shape[0], n_windows), dtype=torch.float64, device=z.device)
        self._standardised_windows(z, cluster, lambda errors, block: (err_center[block], err_scale[block]), scores)
        # The window ending at new point j starts at column n_past + j - L + 1 of x.
        n_new = values.shape[1]
        first = (x.shape[1] - n_new) - (int(self.window) - 1)
        out = torch.full((values.shape[0], n_new), float("nan"), dtype=torch.float64, device=z.device)
        lo = max(0, -first)
        if n_new > lo:
            out[:, lo:] = scores[:, first + lo :]
        return self._array(out)

    def _update(self, values, panel: Panel, rows: np.ndarray, steps: int) -> None:
        """Move ``history_`` (the last :meth:`kept_width` points) on over new data (see
        :meth:`BaseDetector.update`); the networks, scalings and error statistics stay as fitted.

        Within rounding: after ``update(new)``, ``score(next)`` reconstructs the same windows
        as ``score(concat(new, next))`` does for ``next``'s points, with the same scaling, but
        in other batches, whose matrix products may round differently (measured on the CPU in
        float32: bit for bit). A fitted context without any observation at fit keeps no
        scaling of its own: :meth:`score` scales it on its kept history (the last
        :meth:`kept_width` points, a rolling cycle) and the scored data, so its scores differ
        from those of one call over both, and keep differing as updates go on (measured:
        mean differences of 0.1 to 0.5 a day over a week); refit to give it a scaling.
        """
        self._validate()
        self.history_ = self.with_updated_history(values, panel, rows, self.history_)

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        """Expected (reconstructed) and observed value at each alert's peak, in original units, and the cluster."""
        values = panel.to_numpy()
        rows = self.context_rows(panel)
        x, steps = self._with_past(values, panel, rows)
        center, scale, _, _, cluster = self._row_state(x, rows, steps, values.shape[1])
        L = int(self.window)
        # Reconstruct only the windows that end at the peaks.
        ends = (x.shape[1] - values.shape[1]) + peak_pos
        cols = ends[:, None] - np.arange(L - 1, -1, -1)[None, :]
        windows = np.where(cols >= 0, x[ctx_rows[:, None], np.maximum(cols, 0)], np.nan)
        z = self._scaled(windows, center[ctx_rows], scale[ctx_rows])
        _, expected = self._window_errors(z, self._tensor(cluster[ctx_rows]), with_expected=True)
        expected = expected[:, 0].cpu().numpy()
        return {
            "expected": expected * scale[ctx_rows] + center[ctx_rows],
            "observed": values[ctx_rows, peak_pos],
            "cluster": cluster[ctx_rows],
        }


@contextlib.contextmanager
def _training_threads(device: str):
    """On the CPU, train on one intra-op thread (restoring PyTorch's setting afterwards).

    The weight gradients are sums over a batch, and PyTorch's CPU kernels split
    such sums differently for different thread counts, so the trained weights
    differed in the last bits between a 2-thread driver and a Spark worker
    (which runs with ``OMP_NUM_THREADS=spark.task.cpus``). One thread makes them
    identical on any machine. (Measured on 2 cores, default model, 100 contexts
    x 720 hours, 3 epochs: 10.7 s on one thread, 58 s on two.) Scoring needs no
    such care: its padded forward passes give the same results for any thread count.
    """
    if device != "cpu":
        yield
        return
    torch = _import_torch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _count_error_floor(values, scale) -> np.ndarray:
    """Least error scale of each context, in its scaled units: half a count for a context of counts.

    A context of counts (:func:`tsanomaly.scaling.count_rows`) cannot be rebuilt to better than
    whole counts, so a normal error below :data:`~tsanomaly.scaling.COUNT_SCALE_FLOOR` (half a
    count) is not resolution the data holds. A sparse one (0.03 events an hour) rebuilds its zeros
    almost exactly, and each single event was many of its own error scales. Flooring the input
    scale instead changes nothing: the error scale is in the same scaled units and cancels it.
    0 for other contexts (no floor).

    Parameters
    ----------
    values : array, shape (n_contexts, n_times), NumPy or CuPy
        The values the context was scaled on (NaN = missing).
    scale : array, shape (n_contexts,)
        Its input scale (original units per scaled unit).

    Returns
    -------
    numpy.ndarray, shape (n_contexts,)
    """
    counts = backend.to_numpy(count_rows(values))
    return np.where(counts, COUNT_SCALE_FLOOR / backend.to_numpy(scale).astype(np.float64), 0.0)


def _nanmedian_rows(x):
    """Median of each row of a 2-d float tensor, ignoring NaN (the mean of the two middle values,
    as :func:`tsanomaly.scaling.nanmedian`); NaN for a row without a finite value."""
    torch = _import_torch()
    ordered = x.sort(dim=1).values  # NaN sorts last
    n = (~torch.isnan(x)).sum(dim=1, keepdim=True)
    low = ordered.gather(1, ((n - 1).clamp(min=0)) // 2)
    high = ordered.gather(1, (n // 2).clamp(max=x.shape[1] - 1))
    return torch.where(n > 0, (low + high) / 2, float("nan"))[:, 0]


def _canonical_order(contexts, n: int) -> np.ndarray:
    """Rows in sorted label order (what Panel.from_frame and a Spark shard give), or as given.

    Labels that cannot be sorted (mixed types) keep the panel's order.
    """
    if contexts is not None and len(contexts) == n:
        try:
            return np.asarray(contexts.argsort(), dtype=np.int64)
        except TypeError:
            pass
    return np.arange(n, dtype=np.int64)


def _daily_profiles(z: np.ndarray, period: int, phase0: int) -> np.ndarray:
    """Mean of each row at each phase of the cycle.

    Parameters
    ----------
    z : numpy.ndarray, shape (n_contexts, n_times)
        Column j has phase ``(phase0 + j) % period``.

    Returns
    -------
    numpy.ndarray, shape (n_contexts, period)
        NaN where a row never shows a phase.
    """
    n_ctx, n_times = z.shape
    pad_front = phase0 % period
    n_cycles = -(-(pad_front + n_times) // period)
    padded = np.full((n_ctx, n_cycles * period), np.nan)
    padded[:, pad_front : pad_front + n_times] = z
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(padded.reshape(n_ctx, n_cycles, period), axis=1)
