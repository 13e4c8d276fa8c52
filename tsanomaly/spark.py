"""Fit and score on Apache Spark, sharded by context.

Contexts are independent series, so a job too large for one machine shards them
across Spark tasks, and each task runs the ordinary detector on its share:

.. code-block:: python

    import tsanomaly.spark as tss
    from tsanomaly import RollingZScoreDetector

    history = spark.read.parquet("counts/history")     # country, asn, ts, failed_logins
    model = tss.fit(history, RollingZScoreDetector(), context=["country", "asn"],
                    time="ts", value="failed_logins", fill="zero")
    model.save("models/failed_logins")                  # global/ (one JSON line) + state/ (Parquet)
    model = tss.load_model(spark, "models/failed_logins")
    result = tss.score(spark.read.parquet("counts/today"), model)
    result.scores.write.parquet("out/scores")           # context, ts, score, reason
    result.alerts.write.parquet("out/alerts")           # the columns of Detector.alerts
    result.unpersist()

How it works
------------
- **Fitted state in two parts.** :func:`split_state` splits a fitted
  :class:`~tsanomaly.base.BaseDetector` (any but one that holds fitted detectors,
  the ensemble: it raises ``NotImplementedError``) into a small JSON-able *global state*
  (class, parameters, time grid, global threshold, model weights) and a
  *per-context* table: one row per context, one column per fitted attribute
  whose first axis is aligned with ``contexts_`` (NumPy arrays of shape
  ``(n_contexts, ...)`` become scalar or ``array<...>`` columns).
  :func:`merge_state` is its inverse. A :class:`SparkModel` holds both: the
  global state as a dict and the per-context state as a Spark DataFrame, which
  :meth:`SparkModel.save` writes to Parquet.
- **Shards, not one group per context.** Rows are grouped by
  ``pmod(xxhash64(context columns), n_shards)`` and each group goes through
  ``applyInPandas`` once: a Python call per context would cost more than the
  detector itself, while a shard of thousands of contexts runs the detector's
  batched (vectorised or GPU) code. The hash is deterministic, so a retried task
  sees the same contexts, sorted the same way, and writes the same rows.
- **One time grid.** ``Panel.from_frame`` puts every context on one grid
  spanning the whole frame; :func:`fit` and :func:`score` compute that grid on
  the driver first (distinct timestamps at fit, min and max at score) and every
  shard builds its panel on it, so each context's values match the single-machine
  panel exactly.
- **Global threshold.** Detectors calibrate one threshold from the training
  scores of *all* contexts. Each shard returns every context's count of finite
  training scores and its ``tail_size`` largest scores; the driver selects the
  needed order statistics from those tails with Spark (``orderBy().limit()``,
  or an ``approxQuantile`` bracket refined by exact counts when too many are
  needed) and reproduces ``numpy.quantile``'s interpolation, so the ``"quantile"``
  threshold equals the single-machine one **exactly** (bit for bit, given the
  same training scores). A context whose kept tail
  might hide scores above the selected value is re-fitted with its full tail
  (rare: it needs more than ``tail_size`` scores in the global top), which keeps
  the result exact. ``"pot"`` is exact too (its excesses over the initial quantile
  that ``thresholds.calibrate`` uses, 0.98 or ``1 - 2 * contamination`` when lower,
  are collected to the driver in single-machine order), within ``_COLLECT_LIMIT``
  scores. With ``per_context=True`` each context's own threshold is computed in
  its shard, and the global one (the fallback for contexts with too few training
  scores and for contexts unseen at fit) on the driver as above, within
  ``_COLLECT_LIMIT`` for ``"pot"`` too; fixed thresholds need no scores.
- **Global state broadcast once per executor.** :func:`score` broadcasts the
  global state and each Python worker decodes it once into a detector
  *template*, cached by model id; every task copies the template and attaches
  its shard's per-context rows (joined with ``cogroup`` on the shard key).
- **Bad contexts never fail a task.** Duplicate timestamps, infinities,
  rows without a timestamp, no finite observation (or fewer than
  ``min_observations``) mark the context with a ``reason`` and leave the others
  untouched; if the detector raises, the shard is bisected until the contexts
  that raise are isolated, and they get the exception as their ``reason``.
  Such contexts score NaN (null in Spark) with the reason in the scores table;
  :meth:`SparkModel.failed` lists those found at fit. :func:`update` isolates a
  detector that raises in the same way: those contexts keep their state from
  before the batch, with the exception in their ``reason`` (so that they are no
  longer scored), and the driver warns naming them. Timestamps off the grid
  are a context's ``reason`` at score only: at fit the grid is inferred from
  the timestamps of every context (as ``Panel.from_frame`` does), so a timestamp
  that fits no regular grid (or not ``freq``) fails the whole fit with a
  ValueError naming its context, before any task runs. At score the grid starts
  at the first row on the fitted grid after the history, so a row off it, or
  one from the history itself, only marks its context. Rows whose context
  columns are null belong to no context: they are left out, with a warning
  that counts them (at fit the count is kept in ``global_state["fit"]``).

GPU executors
-------------
Where Spark assigns a GPU to a task (``TaskContext.get().resources()["gpu"]``),
the task runs with ``device="cuda"`` on that GPU (``cupy.cuda.Device(addr).use()``,
and ``torch.cuda.set_device`` when PyTorch is loaded), unless the detector was
built with ``device="cpu"``; elsewhere it runs on the CPU (or fails clearly when
``device="cuda"`` was asked for and no GPU is visible). The settings::

    spark.executor.resource.gpu.amount=1
    spark.task.resource.gpu.amount=0.25        # 4 tasks share a GPU; 1 = one task per GPU
    spark.executor.resource.gpu.discoveryScript=/opt/spark/examples/src/main/scripts/getGpusResources.sh
    spark.executorEnv.CUPY_CACHE_DIR=/tmp/cupy  # NVRTC cache on a writable local disk

(``getGpusResources.sh`` ships with Spark; on Kubernetes also set
``spark.executor.resource.gpu.vendor=nvidia.com``). Executors need CuPy
(``tsanomaly[gpu]``) and, for the LSTM, a CUDA build of PyTorch.

Detectors that fit a model across contexts
------------------------------------------
Detectors whose ``_fit`` treats each context on its own (the rolling z-score
baseline without ``level_window``, STL, the matrix profile; another detector
says so with a ``fit_is_per_context`` attribute that is True) are fitted shard
by shard; :func:`fit` checks that every shard produced the same global state and
raises otherwise.
A detector that learns something from all contexts (model weights) plugs in
through two methods: ``_fit_global(values, panel)`` learns the global state and
``_fit_contexts(values, panel) -> train_scores`` the per-context state given it
(``_fit`` being the two in turn). :func:`fit` then runs ``_fit_global`` once, on
one worker (its GPU if it has one), on a deterministic sample of
``sample_contexts`` contexts, broadcasts the result and runs ``_fit_contexts``
in every shard; the result equals a single-machine fit when the sample holds
every context. The LSTM autoencoder has these methods (its weights and
clusters are trained on the sample, on one worker), and so has the baseline for
its ``level_window`` units; the ensemble does not, so :func:`fit` refuses it
with ``NotImplementedError``.

Optional class attributes refine the defaults: ``per_context_attributes``
(names of the per-context fitted attributes, instead of "first axis ==
number of contexts") and ``explanation_types`` (``{column: "double" | "bigint" |
"boolean" | "timestamp" | "string"}``, instead of reading them off a probe's
alerts). ``_restore`` runs once per worker process on the global state, with
empty per-context arrays (and again per shard if it raises there).

Times are read as instants: a ``TIMESTAMP`` column is taken in UTC (set
``spark.sql.session.timeZone=UTC`` to read pandas' naive timestamps unchanged),
a ``TIMESTAMP_NTZ`` column as it is. A grid of days or weeks may have a time
zone (``fit(..., tz=...)``, ``from_detector(..., tz=...)``; the model keeps it in
``global_state["data"]["tz"]``): as on one machine it then follows the zone's wall
clock across daylight-saving switches (a 23-hour day is one step). Its grid
spec holds the zone and its ``start`` on that wall clock, where the steps are
fixed; the shards place a ``TIMESTAMP``'s instants by their wall-clock time
there (a ``TIMESTAMP_NTZ`` holds it already) and build the panel's index with
``date_range`` in the zone, and the output's times are the grid's instants
(the wall clock for a ``TIMESTAMP_NTZ``). Grids of hours or less are in UTC
whatever the zone. PySpark is imported only when a function of this module is
called; ``import tsanomaly`` never imports it.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import importlib
import json
import math
import sys
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsanomaly import backend, thresholds
from tsanomaly.base import (
    _DETECTOR_REGISTRY,
    ALERT_COLUMNS,
    BaseDetector,
    CalibrationWarning,
    HistoryGapWarning,
    Unmatched,
    _build_detector,
    _check_base_state,
    _decode_state,
    _encode_state,
    _to_json,
    history_gap_message,
    steps_by_wall_clock,
)
from tsanomaly.jobs import ABSENT_RULES, check_history_length
from tsanomaly.panel import _DAY_NS, _DST_SHIFT, Panel, _regular_grid, step_duration, too_sparse
from tsanomaly.scaling import lerp, linear_quantile_positions
from tsanomaly.timezones import UTC_NAMES, check_not_a_fixed_abbreviation, check_time_zone, localize_wall_clock
from tsanomaly.validation import is_int

__all__ = [
    "SparkModel",
    "SparkScores",
    "fit",
    "score",
    "update",
    "from_detector",
    "load_model",
    "split_state",
    "merge_state",
    "SPARK_MODEL_FORMAT",
]

SPARK_MODEL_FORMAT = "tsanomaly-spark-model"
SPARK_MODEL_FORMAT_VERSION = 1
# Spark's save modes that leave one model at a path (append would mix two).
_SAVE_MODES = ("error", "errorifexists", "overwrite", "ignore")

#: Contexts per shard when ``n_shards`` is not given: big enough to amortise a
#: Python call and run the detector batched, small enough that a shard's long
#: frame (contexts x times rows) stays well under a Python worker's memory.
DEFAULT_CONTEXTS_PER_SHARD = 5000
#: Largest training scores kept per context for the global threshold.
DEFAULT_TAIL_SIZE = 64
#: Most training scores collected to the driver for one threshold; beyond it the
#: quantile rule switches to an approxQuantile bracket, and POT raises.
_COLLECT_LIMIT = 2_000_000
#: Most distinct timestamps collected to the driver to infer the fit grid.
_MAX_DISTINCT_TIMES = 5_000_000
#: Detectors whose ``_fit`` treats each context on its own (checked at run time:
#: every shard must produce the same global state). Others need the hooks.
_PER_CONTEXT_FIT = frozenset(
    {
        "tsanomaly.detectors.stl.STLDetector",
        "tsanomaly.detectors.matrix_profile.MatrixProfileDetector",
    }
)
# Fitted attributes that differ between shards by construction and are set by the driver.
_SHARD_VOLATILE = ("device_", "global_threshold_")
_INSTALL_HINT = 'tsanomaly.spark needs PySpark and Java 17+: pip install "tsanomaly[spark]"'


def _require_pyspark():
    """``(pyspark.sql.functions, pyspark.sql.types)``, or ImportError saying how to install them."""
    try:
        from pyspark.sql import functions, types
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return functions, types


def _check_fill(fill) -> None:
    """Raise ValueError unless ``fill`` names a rule for absent buckets ("nan" or "zero")."""
    # Shard code tests fill == "zero" and treats anything else as "nan", so a typo would pass silently.
    if fill not in ("nan", "zero"):
        raise ValueError(f"fill must be 'nan' or 'zero', got {fill!r}")


def _col(name: str):
    """Spark column ``name`` taken literally: a dot in it does not reach into a struct."""
    functions, _ = _require_pyspark()
    return functions.col("`" + name.replace("`", "``") + "`")


def _cols(names) -> list:
    return [_col(name) for name in names]


# ====================================================================== state split / merge
def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _detector_class(path: str, module: str | None = None) -> type:
    """The detector class registered under ``path``.

    As in :func:`tsanomaly.load`, only tsanomaly's own detector modules are
    imported by name; ``module`` is passed by the driver for a class it has
    already imported itself (a user-defined detector), never read from a file.
    """
    cls = _DETECTOR_REGISTRY.get(path)
    if cls is None:
        from tsanomaly.detectors import DETECTOR_CLASSES

        builtin = {f"{mod}.{name}": mod for mod, name in DETECTOR_CLASSES.values()}
        if path in builtin:
            importlib.import_module(builtin[path])
        elif module is not None:
            importlib.import_module(module)
        cls = _DETECTOR_REGISTRY.get(path)
    if cls is None:
        raise ValueError(
            f"unknown detector class {path!r}: import the module that defines it before loading the model"
        )
    return cls


def _context_names(contexts: pd.Index, given=None) -> list[str]:
    if given is not None:
        names = [given] if isinstance(given, str) else list(given)
        if len(names) != contexts.nlevels:
            raise ValueError(f"{len(names)} context column names {names} for {contexts.nlevels} context level(s)")
        return names
    if contexts.nlevels == 1:
        return [contexts.name if contexts.name is not None else "context"]
    return [name if name is not None else f"context_{k}" for k, name in enumerate(contexts.names)]


def _contexts_index(frame: pd.DataFrame, columns: list[str]) -> pd.Index:
    """An Index (one column) or MultiIndex (several) of the context columns of ``frame``."""
    if len(columns) == 1:
        return pd.Index(frame[columns[0]], name=columns[0])
    return pd.MultiIndex.from_frame(frame[columns])


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or backend.is_device_array(value)


def _is_per_context(name: str, value, n: int, declared) -> bool:
    if name == "threshold_":  # the base's per-context thresholds, whatever the detector declares
        return True
    if declared is not None:
        return name in declared
    if _is_array(value):
        return value.ndim >= 1 and value.shape[0] == n
    if isinstance(value, dict) and value and all(_is_array(v) for v in value.values()):
        return all(v.ndim >= 1 and v.shape[0] == n for v in value.values())
    return False


# Spark element type and NumPy dtype of a per-context column, by NumPy dtype kind.
_ELEMENT = {
    "f": ("double", np.float64),
    "i": ("bigint", np.int64),
    "u": ("bigint", np.int64),
    "b": ("boolean", np.bool_),
    "M": ("bigint", np.int64),
    "m": ("bigint", np.int64),
}


def _column_spec(attribute: str, key, array) -> dict:
    """How one per-context array is stored: its column, Spark type, dtype and trailing shape."""
    kind = array.dtype.kind
    trailing = [int(s) for s in array.shape[1:]]
    column = attribute if key is None else f"{attribute}__{key}"
    if kind == "U" and not trailing:
        spark_type, dtype = "string", "U"
    elif kind in _ELEMENT:
        element = _ELEMENT[kind][0]
        spark_type = element if not trailing else f"array<{element}>"
        dtype = array.dtype.str
    else:
        raise TypeError(
            f"per-context attribute {attribute} has dtype {array.dtype} and shape {array.shape}; "
            "tsanomaly.spark stores numbers and booleans (any shape) and strings (one per context)"
        )
    return {"attribute": attribute, "key": key, "column": column, "spark_type": spark_type,
            "dtype": dtype, "shape": trailing}


def _object_column(items) -> np.ndarray:
    """A 1-D object array holding one array per row (pandas would stack equal-length arrays into 2-D)."""
    column = np.empty(len(items), dtype=object)
    for row, item in enumerate(items):
        column[row] = item
    return column


def _encode_column(array, spec: dict):
    """A per-context array as column values: a 1-D array, or an object array of flat rows (one per context)."""
    arr = backend.to_numpy(array)
    if spec["spark_type"] == "string":
        return arr.astype(str)
    if arr.dtype.kind in "mM":
        arr = arr.view(np.int64)
    element = _ELEMENT[arr.dtype.kind][1]
    if not spec["shape"]:
        return arr.astype(element)
    flat = arr.reshape(arr.shape[0], int(np.prod(spec["shape"]))).astype(element)
    return _object_column(list(flat))


def _decode_column(values, spec: dict) -> np.ndarray:
    """Inverse of :func:`_encode_column` for a column read back from Spark (nulls become NaN)."""
    values = list(values) if not isinstance(values, np.ndarray) else values
    n = len(values)
    shape = tuple(spec["shape"])
    if spec["spark_type"] == "string":
        return np.asarray([str(v) for v in values], dtype=str)
    dtype = np.dtype(spec["dtype"])
    store = np.float64 if dtype.kind == "f" else _ELEMENT[dtype.kind][1]
    if not shape:
        arr = np.asarray(values, dtype=store)
    else:
        size = int(np.prod(shape))
        arr = np.empty((n, size), dtype=store)
        for row, item in enumerate(values):
            if item is None:
                arr[row] = np.nan
                continue
            item = np.asarray(item, dtype=store)
            if item.shape != (size,):  # a damaged state file: NumPy would broadcast one value silently
                raise ValueError(
                    f"per-context column {spec['column']!r} holds {item.size} values in a row where the model "
                    f"needs {size} (shape {list(shape)}): the model's state is damaged"
                )
            arr[row] = item
        arr = arr.reshape((n,) + shape)
    if dtype.kind in "mM":
        return arr.astype(np.int64).view(dtype)
    return arr.astype(dtype, copy=False)


def _array_to_json(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(backend.to_numpy(array))
    if array.dtype.kind not in "biufcUSMm":
        raise TypeError(f"cannot store an array of dtype {array.dtype} in the global state")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def _array_from_json(encoded: dict) -> np.ndarray:
    # np.frombuffer refuses object dtypes: a model file cannot smuggle pickles in.
    data = base64.b64decode(encoded["data"])
    return np.frombuffer(data, dtype=np.dtype(encoded["dtype"])).reshape(encoded["shape"]).copy()


def _holds_detector(value) -> bool:
    if isinstance(value, BaseDetector):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_detector(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_detector(v) for v in value.values())
    return False


def _refuse_nested(detector: BaseDetector) -> None:
    """NotImplementedError for a detector whose fitted state holds fitted detectors (the ensemble).

    Their per-context state would be stored as global state, aligned with the
    original contexts, and read for whichever rows a shard holds: wrong scores,
    silently. (:func:`fit` refuses such detectors too.)
    """
    nested = [name for name, value in vars(detector).items()
              if name.endswith("_") and not name.startswith("_") and _holds_detector(value)]
    if nested:
        raise NotImplementedError(
            f"{type(detector).__name__} holds fitted detectors ({', '.join(nested)}), whose per-context state "
            "tsanomaly.spark cannot split by context; score it on one machine, or use its members one by one"
        )


def split_state(detector: BaseDetector, context_columns=None) -> tuple[dict, pd.DataFrame]:
    """Split a fitted detector into its global state and its per-context state.

    Any fitted detector whose fitted state holds no other fitted detector: an
    :class:`~tsanomaly.EnsembleDetector` (its members' per-context state would be
    taken as global) raises ``NotImplementedError``.

    Per-context state is every fitted attribute (name ending in ``_``) that is an
    array, or a dict of arrays, whose first axis has length ``len(contexts_)``
    (or the names in the class attribute ``per_context_attributes`` when the
    detector declares them); ``threshold_`` always is. Everything else is global.

    Parameters
    ----------
    detector : BaseDetector
        A fitted detector.
    context_columns : str or list of str, optional
        Names of the context columns; default: the names of ``contexts_``.

    Returns
    -------
    global_state : dict
        JSON-able: ``class``, ``params``, ``state`` (the global attributes in the
        encoding of :meth:`BaseDetector.save`), ``arrays`` (global arrays, base64),
        ``per_context`` (one spec per per-context column) and ``context``.
    per_context : pandas.DataFrame
        One row per context, in the order of ``contexts_``: the context columns,
        then one column per per-context array (scalars, or flat arrays for
        arrays with trailing dimensions, whose shape is in the spec).

    Examples
    --------
    >>> import numpy as np
    >>> from tsanomaly import RollingZScoreDetector
    >>> det = RollingZScoreDetector(window=3, seasonal_period=None).fit(np.arange(40.0).reshape(4, 10))
    >>> global_state, rows = split_state(det)
    >>> sorted(spec["column"] for spec in global_state["per_context"])
    ['history_', 'scale_floor_', 'threshold_']
    >>> merge_state(global_state, rows).score(np.ones((4, 2))).shape
    (4, 2)
    """
    detector.check_fitted()
    _refuse_nested(detector)
    contexts = detector.contexts_
    names = _context_names(contexts, context_columns)
    n = len(contexts)
    declared = getattr(type(detector), "per_context_attributes", None)
    global_attrs, specs, columns = {}, [], {}
    for name, value in vars(detector).items():
        if not name.endswith("_") or name.startswith("_") or name == "contexts_":
            continue
        if not _is_per_context(name, value, n, declared):
            global_attrs[name] = value
            continue
        items = [(str(k), v) for k, v in value.items()] if isinstance(value, dict) else [(None, value)]
        for key, array in items:
            spec = _column_spec(name, key, array)
            if spec["column"] in names or spec["column"] in columns:
                raise ValueError(f"per-context column {spec['column']!r} clashes with another column")
            specs.append(spec)
            columns[spec["column"]] = _encode_column(array, spec)
    meta_state, arrays = {}, {}
    for name, value in global_attrs.items():
        _encode_state(name, value, meta_state, arrays)
    global_state = {
        "format": SPARK_MODEL_FORMAT,
        "version": SPARK_MODEL_FORMAT_VERSION,
        "class": _class_path(type(detector)),
        "params": _to_json(detector.get_params()),
        "state": meta_state,
        "arrays": {key: _array_to_json(a) for key, a in arrays.items()},
        "per_context": specs,
        "context": names,
    }
    frame = contexts.to_frame(index=False)
    frame.columns = names
    frame = frame.assign(**columns) if columns else frame
    return global_state, frame


def _template(global_state: dict, device: str | None = None, module: str | None = None) -> BaseDetector:
    """A detector holding the global state and empty per-context state (``_restore`` run once).

    A Spark worker builds one per model and copies it for each shard; ``_restore``
    (rebuilding a torch module, say) therefore runs once per worker process,
    with per-context arrays of length 0. A detector whose ``_restore`` needs the
    real per-context rows is restored again in :func:`_with_contexts`.
    """
    cls = _detector_class(global_state["class"], module)
    params = dict(global_state["params"])
    if device is not None:
        params["device"] = device
    detector = _build_detector(cls, params)
    arrays = {key: _array_from_json(value) for key, value in global_state["arrays"].items()}
    for name, encoded in global_state["state"].items():
        setattr(detector, name, _decode_state(encoded, arrays, name=name))
    detector.device_ = backend.resolve_device(detector.device) if device is None else device
    names = global_state["context"]
    columns = names + [spec["column"] for spec in global_state["per_context"]]
    empty = pd.DataFrame({name: pd.Series([], dtype=object) for name in columns})
    _set_per_context(detector, global_state["per_context"], empty, names)
    try:
        detector._restore()
        detector._spark_restore_per_shard = False
    except Exception:  # noqa: BLE001 - _restore needs the real rows: run it per shard instead
        detector._spark_restore_per_shard = True
    return detector


def _set_per_context(detector, specs: list, frame: pd.DataFrame, names: list[str]) -> None:
    detector.contexts_ = _contexts_index(frame, names)
    dicts: dict = {}
    for spec in specs:
        array = _decode_column(frame[spec["column"]].to_numpy(dtype=object), spec)
        if spec["key"] is None:
            setattr(detector, spec["attribute"], array)
        else:
            dicts.setdefault(spec["attribute"], {})[spec["key"]] = array
    for name, value in dicts.items():
        setattr(detector, name, value)


def _add_placeholder(detector: BaseDetector, specs: list, names: list[str]) -> None:
    """Give a detector without per-context rows one placeholder row that matches no context.

    On one machine a fitted detector always has a context, and detectors read an
    unseen context's per-context state at row ``max(rows, 0)``, then mask it (the
    cold start). A score shard whose contexts were all unseen at fit has no row to
    read there: the placeholder (zeros, under a label equal to nothing) is that
    row, so every context of the shard stays unseen and scores as on one machine.
    """
    label = np.array([Unmatched()], dtype=object)
    detector.contexts_ = (pd.Index(label, name=names[0]) if len(names) == 1
                          else pd.MultiIndex.from_arrays([label] * len(names), names=names))
    for spec in specs:
        value = getattr(detector, spec["attribute"])
        array = value if spec["key"] is None else value[spec["key"]]
        row = np.zeros((1,) + array.shape[1:], dtype=array.dtype)
        if spec["key"] is None:
            setattr(detector, spec["attribute"], row)
        else:
            value[spec["key"]] = row


def _with_contexts(template: BaseDetector, global_state: dict, frame: pd.DataFrame,
                   placeholder: bool = False) -> BaseDetector:
    """A copy of ``template`` with the per-context rows of ``frame`` attached.

    With ``placeholder``, a ``frame`` without rows gives the detector
    :func:`_add_placeholder`'s row, so that it scores contexts unseen at fit.
    """
    detector = copy.copy(template)
    _set_per_context(detector, global_state["per_context"], frame, global_state["context"])
    if placeholder and not len(frame):
        _add_placeholder(detector, global_state["per_context"], global_state["context"])
    if getattr(template, "_spark_restore_per_shard", False):
        detector._restore()
    return detector


def merge_state(global_state: dict, per_context: pd.DataFrame, device: str | None = None) -> BaseDetector:
    """Rebuild a fitted detector from :func:`split_state`'s two parts (its inverse).

    Parameters
    ----------
    global_state : dict
        As returned by :func:`split_state` (or ``SparkModel.global_state``).
    per_context : pandas.DataFrame
        Rows for any subset of contexts, in any order: the detector's
        ``contexts_`` follows the rows. With no rows at all, the detector scores
        every context as unseen at fit (a cold start, as on one machine); its
        ``contexts_`` then holds one placeholder label that equals no context.
    device : {"auto", "cpu", "cuda"}, optional
        Override the ``device`` parameter.

    Returns
    -------
    BaseDetector
        A fitted detector whose scores for those contexts equal the original's.
    """
    if global_state.get("format") != SPARK_MODEL_FORMAT:
        raise ValueError(f"not a tsanomaly Spark model state (format {global_state.get('format')!r})")
    if global_state.get("version") != SPARK_MODEL_FORMAT_VERSION:
        raise ValueError(f"Spark model state version {global_state.get('version')} is not supported")
    missing = [c for c in global_state["context"] + [s["column"] for s in global_state["per_context"]]
               if c not in per_context.columns]
    if missing:
        raise ValueError(f"the per-context rows lack columns {missing}")
    return _with_contexts(_template(global_state, device), global_state, per_context, placeholder=True)


def _canonical_global(global_state: dict) -> str:
    """The part of a shard's global state that every shard must share, as canonical JSON."""
    state = {k: v for k, v in global_state["state"].items() if k not in _SHARD_VOLATILE}
    arrays = {k: v for k, v in global_state["arrays"].items() if k.split("/")[0] not in _SHARD_VOLATILE}
    return json.dumps({"state": state, "arrays": arrays, "per_context": _layout(global_state["per_context"])},
                      sort_keys=True)


# ====================================================================== worker side
@dataclass
class _ShardData:
    """A shard's long rows on the common grid: every context, its values, and why it is unusable."""

    contexts: pd.Index
    values: np.ndarray  # (n_contexts, n_times)
    index: pd.DatetimeIndex
    reasons: np.ndarray  # object, None where the context's data is usable


def _grid_index(grid: dict) -> pd.DatetimeIndex:
    """The grid's points: naive UTC, or in its zone ``grid["tz"]`` (days and weeks on the wall clock).

    A zoned grid's ``start`` (and ``history_end``) are nanoseconds on the zone's wall clock, where
    its steps are fixed (a day across a switch is 24 h there, 23 or 25 h in UTC): ``date_range``
    in the zone steps from there as ``Panel.from_frame`` builds such a grid on one machine.
    """
    start = pd.Timestamp(grid["start"])
    if grid.get("tz") is not None:
        start = start.tz_localize(grid["tz"])
    return pd.date_range(start, periods=grid["n_times"],
                         freq=pd.tseries.frequencies.to_offset(grid["freq"]), name=grid["name"], unit="ns")


def _on_clock(t_ns: np.ndarray, grid: dict, codec: str) -> np.ndarray:
    """Epoch nanoseconds of instants (``codec`` "ltz") on the grid's clock: its zone's wall clock for
    a zoned grid, else as they are (a ``TIMESTAMP_NTZ`` already holds the wall clock)."""
    if grid.get("tz") is None or codec != "ltz":
        return t_ns
    utc = pd.DatetimeIndex(t_ns.view("datetime64[ns]")).tz_localize("UTC")
    return utc.tz_convert(grid["tz"]).tz_localize(None).asi8


def _clock_time(ns: int, grid: dict) -> str:
    """A time on the grid's clock, for the messages: with the zone's name on a zoned grid."""
    stamp = pd.Timestamp(int(ns))
    return str(stamp) if grid.get("tz") is None else f"{stamp} ({grid['tz']})"


def _times_ns(column: pd.Series, codec: str) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ns since the epoch, missing mask) of the ``_t`` column a shard receives."""
    missing = column.isna().to_numpy()
    if codec == "ltz":  # epoch microseconds from unix_micros: exact instants, no time zone
        micros = column.fillna(0).to_numpy(dtype=np.int64)
        return micros * 1000, missing
    stamps = pd.to_datetime(column).dt.as_unit("ns")
    return stamps.fillna(pd.Timestamp(0)).to_numpy().view(np.int64), missing


def _mark(reasons: np.ndarray, codes: np.ndarray, mask: np.ndarray, describe) -> None:
    """Give each context with a row in ``mask`` the reason ``describe(row)`` (first row, first reason)."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return
    contexts, first = np.unique(codes[rows], return_index=True)
    for context, row in zip(contexts, rows[first]):
        if reasons[context] is None:
            reasons[context] = describe(row)


def _shard_data(pdf: pd.DataFrame, spec: dict, min_observations: int | None) -> _ShardData:
    """Build a shard's panel on the common grid, marking the contexts whose data is unusable.

    The values of a usable context equal those ``Panel.from_frame`` gives it on
    one machine; a context with duplicate or off-grid timestamps, infinite
    values or (with ``min_observations``) too few finite values gets a reason.
    """
    names, grid = spec["context"], spec["grid"]
    index = _grid_index(grid)
    # Sorted rows: the same shard always yields the same arrays, row for row.
    pdf = pdf.sort_values(names + ["_t"], kind="stable", ignore_index=True)
    keys = _contexts_index(pdf, names)
    contexts = keys.unique().sort_values()
    codes = contexts.get_indexer(keys)
    t_ns, t_missing = _times_ns(pdf["_t"], spec["time_codec"])
    t_ns = _on_clock(t_ns, grid, spec["time_codec"])  # a zoned grid's steps are fixed on its wall clock
    values = pdf["_v"].to_numpy(dtype=np.float64, na_value=np.nan)
    start, step, n_times = grid["start"], grid["step"], grid["n_times"]
    offset = t_ns - start
    position = offset // step
    reasons = np.full(len(contexts), None, dtype=object)

    def stamp(row):
        return _clock_time(t_ns[row], grid)

    _mark(reasons, codes, t_missing, lambda row: "a row has no timestamp")
    if "history_end" in grid:  # at score: a row from the fitted history is not off the grid, but too early
        end = grid["history_end"]
        _mark(reasons, codes, ~t_missing & (t_ns <= end), lambda row: (
            f"timestamp {stamp(row)} is not after the fitted history, which ends at {_clock_time(end, grid)}"))
    off_grid = ~t_missing & ((offset % step != 0) | (position < 0) | (position >= n_times))
    _mark(reasons, codes, off_grid, lambda row: (
        f"timestamp {stamp(row)} is not on the grid (step {pd.Timedelta(step)} from {_clock_time(start, grid)})"))
    placed = ~t_missing & ~off_grid
    cell = np.where(placed, codes * np.int64(n_times) + position, -1 - np.arange(len(codes)))
    duplicated = placed & pd.Series(cell).duplicated(keep=False).to_numpy()
    _mark(reasons, codes, duplicated, lambda row: (
        f"duplicate rows at {stamp(row)}; aggregate them first (e.g. sum the counts)"))
    infinite = np.isinf(values)
    _mark(reasons, codes, infinite, lambda row: f"infinite value {values[row]} at {stamp(row)}")
    grid_values = np.full((len(contexts), n_times), 0.0 if spec["fill"] == "zero" else np.nan)
    keep = placed & ~duplicated & ~infinite
    grid_values[codes[keep], position[keep]] = values[keep]
    if min_observations is not None:
        finite = np.isfinite(grid_values).sum(axis=1)
        for row in np.flatnonzero(finite < min_observations):
            if reasons[row] is None:
                reasons[row] = ("no finite observation in the history" if finite[row] == 0 else
                                f"{finite[row]} finite observations, fewer than min_observations={min_observations}")
    return _ShardData(contexts, grid_values, index, reasons)


def _usable(reasons: np.ndarray) -> np.ndarray:
    return np.array([r is None for r in reasons], dtype=bool)


def _task_gpu_addresses() -> list[str]:
    """GPU addresses Spark assigned to the running task (empty on the driver or without GPU scheduling)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    context = TaskContext.get()
    if context is None:
        return []
    gpu = context.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def _task_device(requested: str) -> str:
    """The device a task runs on: the GPU Spark assigned it, else the CPU (see the module docstring)."""
    addresses = _task_gpu_addresses()
    if requested != "cpu" and addresses:
        address = int(addresses[0])
        try:
            import cupy

            cupy.cuda.Device(address).use()
        except Exception as exc:  # noqa: BLE001 - CuPy missing or the address unusable
            raise backend.GPUUnavailableError(
                f"Spark assigned GPU {address} to this task but CuPy cannot use it ({exc}); install "
                '"tsanomaly[gpu]" on the executors or build the detector with device="cpu"'
            ) from exc
        if "torch" in sys.modules:  # the LSTM: its tensors go to the same GPU
            torch = sys.modules["torch"]
            if torch.cuda.is_available():
                torch.cuda.set_device(address)
        return "cuda"
    if requested == "cuda":
        return backend.resolve_device("cuda")  # raises, saying why, when no GPU is visible
    return "cpu"


# Errors that say the environment is wrong, not a context's data: they fail the task.
_FATAL = (ImportError, NotImplementedError, backend.GPUUnavailableError)


def _isolate(run, rows: np.ndarray) -> list:
    """``run(rows)``; when it raises, bisect ``rows`` until the contexts that raise are isolated.

    Returns a list of ``(rows, result, error)`` with ``error`` None on success.
    """
    try:
        return [(rows, run(rows), None)]
    except _FATAL:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad context must not fail the task
        if len(rows) <= 1:
            return [(rows, None, f"{type(exc).__name__}: {exc}")]
        half = len(rows) // 2
        return _isolate(run, rows[:half]) + _isolate(run, rows[half:])


def _run_isolated(run, targets: np.ndarray, reasons: np.ndarray) -> list:
    """:func:`_isolate` over the contexts ``targets`` (rows of ``reasons``), as fit, score and update use it.

    ``run`` takes positions in ``targets``; each context it raises on gets the exception as its
    reason in ``reasons`` (in place). Returns the ``(positions, result)`` of the pieces that ran.
    """
    done = []
    for rows, result, error in _isolate(run, np.arange(len(targets))):
        if error is not None:
            reasons[targets[rows]] = error
        else:
            done.append((rows, result))
    return done


_TEMPLATE_CACHE: OrderedDict = OrderedDict()
_TEMPLATE_LOCK = threading.Lock()
_TEMPLATE_CACHE_SIZE = 4


def _cached_template(spec: dict, device: str) -> BaseDetector:
    """The model's detector template, decoded once per worker process and model (LRU of a few)."""
    key = (spec["model_id"], device)
    with _TEMPLATE_LOCK:
        template = _TEMPLATE_CACHE.get(key)
        if template is not None:
            _TEMPLATE_CACHE.move_to_end(key)
            return template
    payload = spec["global"]
    payload = payload.value if hasattr(payload, "value") else payload  # a Broadcast, or the bytes themselves
    template = _template(json.loads(payload), device=device, module=spec["class_module"])
    with _TEMPLATE_LOCK:
        _TEMPLATE_CACHE[key] = template
        while len(_TEMPLATE_CACHE) > _TEMPLATE_CACHE_SIZE:
            _TEMPLATE_CACHE.popitem(last=False)
    return template


def _fit_piece(panel: Panel, spec: dict, device: str):
    """Fit one set of contexts; returns (fitted detector, training scores on the host)."""
    if spec["mode"] == "per_context":
        params = dict(spec["params"], device=device)
        detector = _detector_class(spec["class"], spec["class_module"])(**params)
        train = detector.fit_score(panel).values
    else:
        detector = copy.copy(_cached_template(spec, device))
        panel = detector.prepare_fit(panel, device)
        train = detector._fit_contexts(panel.values, panel)
        detector.threshold_, detector.global_threshold_ = thresholds.calibrate(
            train, detector.threshold, detector.contamination, detector.per_context
        )
    return detector, backend.to_numpy(train).astype(np.float64, copy=False)


def _tails(train: np.ndarray, tail_size: int | None):
    """Per context: finite count, the largest finite scores (descending), the smallest of them, and
    whether the tail was cut."""
    finite = np.isfinite(train)
    n_finite = finite.sum(axis=1)
    keep = train.shape[1] if tail_size is None else min(int(tail_size), train.shape[1])
    filled = np.where(finite, train, -np.inf)
    order = np.argsort(-filled, axis=1, kind="stable")[:, :keep]
    top = np.take_along_axis(filled, order, axis=1)
    sizes = np.minimum(n_finite, keep)
    tails = [top[r, : sizes[r]] for r in range(len(train))]
    tail_min = np.array([t[-1] if len(t) else np.nan for t in tails])
    return n_finite, tails, tail_min, sizes < n_finite


def _fit_rows(detector: BaseDetector, train: np.ndarray, spec: dict) -> pd.DataFrame:
    """Output rows of a fitted piece: per-context state, threshold placeholders, score tails."""
    global_state, frame = split_state(detector, spec["context"])
    layout = _layout(global_state["per_context"])
    if layout != spec["layout"]:
        raise RuntimeError(
            f"{spec['class']} produced per-context state {layout} in a shard but {spec['layout']} when "
            "probed on the driver; declare per_context_attributes on the class"
        )
    n = len(frame)
    # Per-context thresholds are the shard's own only where calibrate gave the context its
    # own; the rest (and every context under a global rule) wait for the global threshold.
    placeholder = np.full(n, np.nan)
    if spec["per_context_threshold"]:
        own = np.isfinite(train).sum(axis=1) >= thresholds.MIN_SCORES_PER_CONTEXT
        placeholder[own] = np.asarray(detector.threshold_, dtype=np.float64)[own]
    frame["threshold_"] = placeholder
    n_finite, tails, tail_min, truncated = _tails(train, spec["tail_size"])
    frame["_n_finite"] = n_finite.astype(np.int64)
    frame["_tail"] = _object_column(tails)
    frame["_tail_min"] = tail_min
    frame["_truncated"] = truncated
    # The largest finite |score| (NaN without a finite score): POT's tie tolerance scales with it.
    magnitude = np.where(np.isfinite(train), np.abs(train), -np.inf)
    frame["_abs_max"] = np.where(n_finite > 0, magnitude.max(axis=1, initial=-np.inf), np.nan)
    frame["reason"] = None
    shared = np.full(n, None, dtype=object)
    if n:
        shared[0] = _canonical_global(global_state)
    frame["_global"] = shared
    return frame


def _bad_rows(contexts: pd.Index, reasons: np.ndarray, names: list[str]) -> pd.DataFrame:
    frame = contexts.to_frame(index=False)
    frame.columns = names
    frame["reason"] = reasons
    return frame


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _finish(frames: list, columns: list[str], int_columns=(), bool_columns=(), object_columns=()) -> pd.DataFrame:
    """The output frame of a shard: ``columns`` in order, each typed so that Arrow converts it.

    ``object_columns`` (the ``array<...>`` and ``string`` columns of the schema) are object
    columns holding None where a value is absent, whatever the frames held there (a column
    no frame has reindexes as float NaN, which PySpark's array converter cannot iterate).
    """
    if frames:
        out = pd.concat(frames, ignore_index=True).reindex(columns=columns)
    else:  # no row: empty object columns convert to any Arrow type
        out = pd.DataFrame({column: pd.Series([], dtype=object) for column in columns})
    object_columns = set(object_columns)
    # Absent values must reach Arrow as nulls: None in object columns (PySpark's array
    # converter iterates anything that is not None), nullable integer and boolean dtypes.
    # (pandas 3 infers its "str" dtype for strings with None, which PySpark 4.3 cannot convert
    # when values are missing: such columns are made plain object columns.)
    for column in out.columns:
        if (column in object_columns or out[column].dtype == object
                or isinstance(out[column].dtype, pd.StringDtype)):
            values = _object_column([None if _missing(v) else v for v in out[column]])
            out[column] = pd.Series(values, index=out.index, dtype=object)
    for column in int_columns:
        out[column] = out[column].astype("Int64")
    for column in bool_columns:
        out[column] = out[column].astype("boolean")
    return out


def _fit_shard(pdf: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """applyInPandas body of :func:`fit`: one shard of contexts in, one row per context out."""
    names = spec["context"]
    data = _shard_data(pdf, spec, spec["min_observations"])
    reasons = data.reasons.copy()
    good = np.flatnonzero(_usable(reasons))
    frames = []
    if len(good):
        device = _task_device(spec["device"])
        panel = Panel(data.values[good], data.contexts[good], data.index)
        for _, result in _run_isolated(lambda rows: _fit_piece(panel.take(rows), spec, device), good, reasons):
            frames.append(_fit_rows(*result, spec))
    bad = np.flatnonzero(~_usable(reasons))
    if len(bad):
        # No state and no training score: null state columns, empty tails.
        frame = _bad_rows(data.contexts[bad], reasons[bad], names)
        frame["_n_finite"] = 0
        frame["_tail"] = _object_column([np.zeros(0)] * len(bad))
        frame["_tail_min"] = np.nan
        frame["_truncated"] = False
        frame["_abs_max"] = np.nan
        frames.append(frame)
    return _finish(frames, spec["columns"], spec["int_columns"], spec["bool_columns"], spec["object_columns"])


def _fit_global_shard(pdf: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """applyInPandas body that runs a detector's ``_fit_global`` on a sample, on one worker."""
    data = _shard_data(pdf, spec, spec["min_observations"])
    good = np.flatnonzero(_usable(data.reasons))
    if not len(good):
        # Said on the driver: an error raised here reaches the user as a Py4J trace.
        counts = pd.Series(data.reasons).value_counts()
        reasons = "; ".join(f"{n} x {reason}" for reason, n in counts.head(3).items())
        return pd.DataFrame({"global_state": [None], "reason": [f"{len(data.reasons)} contexts, {reasons}"]})
    device = _task_device(spec["device"])
    params = dict(spec["params"], device=device)
    detector = _detector_class(spec["class"], spec["class_module"])(**params)
    panel = detector.prepare_fit(Panel(data.values[good], data.contexts[good], data.index), device)
    detector._fit_global(panel.values, panel)
    train = detector._fit_contexts(panel.values, panel)
    detector.threshold_, detector.global_threshold_ = thresholds.calibrate(
        train, detector.threshold, detector.contamination, detector.per_context
    )
    global_state, _ = split_state(detector, spec["context"])
    global_state["params"] = spec["params"]
    global_state["explanations"] = _explanation_kinds(detector)
    return pd.DataFrame({"global_state": [json.dumps(global_state)], "reason": [None]})


def _score_piece(detector: BaseDetector, panel: Panel):
    with warnings.catch_warnings():
        # Said once on the driver (score): an executor's warning reaches only its log.
        warnings.simplefilter("ignore", HistoryGapWarning)
        scores = detector.score(panel)
    return backend.to_numpy(scores.values), detector.alerts(panel, scores=scores)


def _with_absent_as_zero(data: _ShardData, state: pd.DataFrame, names: list[str]) -> _ShardData:
    """``data`` with a row of zeros over the grid for each context of ``state`` it does not hold
    (``score(absent="zero")``), contexts sorted as :func:`_shard_data` sorts them."""
    fitted = _contexts_index(state, names)
    added = fitted[~np.asarray(fitted.isin(data.contexts), dtype=bool)]
    if not len(added):
        return data
    contexts = data.contexts.append(added)
    order = np.asarray(contexts.argsort())
    values = np.concatenate([data.values, np.zeros((len(added), data.values.shape[1]))])
    reasons = np.concatenate([data.reasons, np.full(len(added), None, dtype=object)])
    return _ShardData(contexts[order], values[order], data.index, reasons[order])


def _score_shard(new: pd.DataFrame, state: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """cogroup body of :func:`score`: a shard's new rows and per-context state in, one row per context out."""
    names = spec["context"]
    zero_filled = spec.get("absent") == "zero" and len(state)
    if not len(new) and not zero_filled:  # contexts with state but no new data are not scored
        return _finish([], spec["columns"], object_columns=spec["object_columns"])
    device = _task_device(spec["device"])
    template = _cached_template(spec, device)
    data = _shard_data(new, spec, None)
    if zero_filled:  # fitted contexts without a row: zero events over the batch (absent="zero")
        data = _with_absent_as_zero(data, state, names)
    reasons = data.reasons.copy()
    fitted = state["reason"].isna().to_numpy() if len(state) else np.zeros(0, dtype=bool)
    if len(state) and not fitted.all():  # contexts that could not be fitted are not scored
        failed = state.loc[~fitted]
        where = _contexts_index(failed, names).get_indexer(data.contexts)
        for row in np.flatnonzero(where >= 0):
            if reasons[row] is None:
                reasons[row] = f"not fitted: {failed['reason'].iloc[where[row]]}"
    # A shard without a fitted context (all its contexts unseen at fit) still scores them cold.
    detector = _with_contexts(template, spec["global_state_light"], state.loc[fitted], placeholder=True)
    detector.device_ = device
    good = np.flatnonzero(_usable(reasons))
    scores = np.full(data.values.shape, np.nan)
    alerts = []
    if len(good):
        panel = Panel(data.values[good], data.contexts[good], data.index)
        for rows, result in _run_isolated(lambda rows: _score_piece(detector, panel.take(rows)), good, reasons):
            scores[good[rows]] = result[0]
            alerts.append(result[1])
    return _score_rows(data, reasons, scores, alerts, spec)


def _update_shard(new: pd.DataFrame, state: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """cogroup body of :func:`update`: a shard's new rows and per-context state in, its state rows
    rolled forward over the batch out (the state's columns, ``_specs`` on the first row, and
    ``_update_failed`` where the detector raised on the context)."""
    names, columns = spec["context"], spec["columns"]
    state_columns = [c for c in columns if c not in ("_specs", "_update_failed")]
    state = state.drop(columns=["_shard"], errors="ignore")
    fitted = state["reason"].isna().to_numpy() if len(state) else np.zeros(0, dtype=bool)
    # Contexts that failed at fit (or in an earlier update) have no state to move: their rows pass through.
    frames = [state.loc[~fitted, state_columns]] if (~fitted).any() else []
    if fitted.any():
        device = _task_device(spec["device"])
        template = _cached_template(spec, device)
        rows_state = state.loc[fitted].reset_index(drop=True)
        contexts = _contexts_index(rows_state, names)
        index = _grid_index(spec["grid"])
        # As BaseDetector.update: a fitted context without a row moves on as missing (NaN), or as
        # zero events with absent="zero" (as _with_absent_as_zero scores it); one with a marked row
        # (off the grid, not after the history, duplicated, infinite) as missing, so that its history
        # keeps the batch's length; a context unseen at fit has no state and stays unseen.
        values = np.full((len(contexts), len(index)), 0.0 if spec.get("absent") == "zero" else np.nan)
        if len(new):
            data = _shard_data(new, spec, None)
            rows = contexts.get_indexer(data.contexts)
            usable = _usable(data.reasons)
            take = np.flatnonzero((rows >= 0) & usable)
            values[rows[take]] = data.values[take]
            values[rows[np.flatnonzero((rows >= 0) & ~usable)]] = np.nan

        def roll(rows):
            # A detector of these contexts only: BaseDetector.update moves every context it holds.
            detector = _with_contexts(template, spec["global_state_light"], rows_state.iloc[rows])
            detector.device_ = device
            with warnings.catch_warnings():
                # Said once on the driver (update): an executor's warning reaches only its log.
                warnings.simplefilter("ignore", HistoryGapWarning)
                detector.update(Panel(values[rows], detector.contexts_, index))
            return detector

        # As score: the contexts the detector raises on are isolated, and the others move on.
        reasons = np.full(len(contexts), None, dtype=object)
        rolled = [split_state(detector, names) for _, detector in _run_isolated(roll, np.arange(len(contexts)),
                                                                                 reasons)]
        for piece, (global_state, frame) in enumerate(rolled):
            frame["reason"] = None
            if piece == 0:  # the layout, once per shard, for the driver to check
                specs = np.full(len(frame), None, dtype=object)
                specs[0] = json.dumps(global_state["per_context"])
                frame["_specs"] = specs
            frames.append(frame)
        failed = np.flatnonzero(~_usable(reasons))
        if len(failed):
            # The state from before the batch, marked: its history no longer ends where the model's does,
            # so score must not read it as if it did (it says "not fitted: <reason>" instead).
            first, last = index[0], index[-1]
            kept = rows_state.loc[failed, state_columns].copy()
            kept["reason"] = [f"update over {first} to {last} failed: {reason} (its state is from before that "
                              "batch: fit again to score it)" for reason in reasons[failed]]
            kept["_update_failed"] = True
            frames.append(kept)
    return _finish(frames, columns, spec["int_columns"], spec["bool_columns"], spec["object_columns"])


def _encode_explanation(values: pd.Series, kind: str, wall_clock=None) -> np.ndarray:
    """An explanation column as Arrow-ready values (timestamps as epoch microseconds, None for missing;
    on the wall clock of the zone ``wall_clock`` when given, as a ``TIMESTAMP_NTZ`` output holds them)."""
    if kind == "double":
        return pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    if kind == "timestamp":
        stamps = pd.to_datetime(values)
        if wall_clock is not None and stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert(wall_clock).dt.tz_localize(None)
        micros = stamps.dt.as_unit("us").astype("int64").to_numpy()
        return _object_column([None if missing else int(m) for m, missing in zip(micros, stamps.isna().to_numpy())])
    convert = {"bigint": int, "boolean": bool, "string": str}[kind]
    return _object_column([None if _missing(v) else convert(v) for v in values])


def _score_rows(data: _ShardData, reasons, scores, alerts: list, spec: dict) -> pd.DataFrame:
    """One row per context: its scores as an array and its alerts as parallel arrays."""
    names = spec["context"]
    out = data.contexts.to_frame(index=False)
    out.columns = names
    out["reason"] = reasons
    out["scores"] = _object_column(list(scores))
    table = pd.concat(alerts, ignore_index=True) if alerts else pd.DataFrame(columns=names)
    n_alerts = len(table)
    if n_alerts:
        rows = data.contexts.get_indexer(_contexts_index(table, names))
        grid = spec["grid"]
        zone = grid.get("tz")

        def position(column):
            stamps = pd.DatetimeIndex(table[column]).as_unit("ns")
            if zone is not None:  # a zoned grid's positions count steps of its wall clock
                stamps = stamps.tz_convert(zone).tz_localize(None)
            return ((stamps.asi8 - grid["start"]) // grid["step"]).astype(np.int32)

        columns = {"_a_start": position("start"), "_a_end": position("end"), "_a_peak": position("peak_time"),
                   "_a_peak_score": table["peak_score"].to_numpy(np.float64),
                   "_a_threshold": table["threshold"].to_numpy(np.float64)}
        for k, (name, kind) in enumerate(spec["explanations"]):
            values = table[name] if name in table else pd.Series([None] * n_alerts, index=table.index)
            columns[f"_a_x{k}"] = _encode_explanation(values, kind, zone if spec["time_codec"] == "ntz" else None)
        order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[order], np.arange(len(out) + 1))
        for column, values in columns.items():
            values = np.asarray(values)[order]
            out[column] = _object_column([values[bounds[r]: bounds[r + 1]] for r in range(len(out))])
    else:
        for column in spec["alert_columns"]:
            out[column] = _object_column([np.zeros(0)] * len(out))
    return _finish([out], spec["columns"], object_columns=spec["object_columns"])


# ====================================================================== driver side
def _time_codec(schema, time: str) -> str:
    _, types = _require_pyspark()
    data_type = schema[time].dataType
    if isinstance(data_type, types.TimestampType):
        return "ltz"
    if isinstance(data_type, types.TimestampNTZType):
        return "ntz"
    if isinstance(data_type, types.DateType):
        # to_timestamp reads a date as midnight in the session's time zone, which a daylight-saving
        # switch moves by an hour in UTC: a grid of days then fits no regular grid.
        fix = (f"convert it with col({time!r}).cast('timestamp_ntz'), which keeps each day at midnight "
               "whatever the session's time zone")
    else:
        fix = "convert it with pyspark.sql.functions.to_timestamp"
    raise TypeError(f"column {time!r} has type {data_type.simpleString()}; tsanomaly.spark needs a timestamp ({fix})")


def _times_from_spark(column: pd.Series, codec: str) -> pd.Series:
    ns, _ = _times_ns(column, codec)
    return pd.Series(ns.view("datetime64[ns]"))


def _utc_offsets(grid: dict) -> list[tuple[int, int]]:
    """``(first position, UTC offset in microseconds)`` of each stretch of a zoned grid at one offset
    (one stretch per daylight-saving switch, plus one), read off the grid as pandas builds it."""
    index = _grid_index(grid)
    offset = (index.tz_localize(None).asi8 - index.asi8) // 1000
    firsts = np.concatenate([[0], np.flatnonzero(np.diff(offset)) + 1])
    return [(int(p), int(offset[p])) for p in firsts]


def _time_at(position_col, grid: dict, codec: str):
    """Spark column: the timestamp at integer grid position ``position_col``."""
    functions, _ = _require_pyspark()
    step_us = grid["step"] // 1000
    if codec == "ltz":
        micros = functions.lit(grid["start"] // 1000) + position_col.cast("long") * step_us
        if grid.get("tz") is not None:
            # Wall-clock micros less the UTC offset at that point: the instant. The offsets are pandas'
            # (those the shards' grids have), by stretch, not Spark's own zone rules.
            stretches = _utc_offsets(grid)
            offset = functions.lit(stretches[0][1])
            for first, micros_off in stretches[1:]:
                offset = functions.when(position_col >= first, functions.lit(micros_off)).otherwise(offset)
            micros = micros - offset
        return functions.timestamp_micros(micros)
    start = functions.lit(pd.Timestamp(grid["start"]).isoformat()).cast("timestamp_ntz")
    return functions.timestamp_add("MICROSECOND", position_col.cast("long") * step_us, start)


def _explanation_column(column, kind: str, codec: str):
    """Spark column of an explanation: timestamps arrive as epoch microseconds."""
    functions, _ = _require_pyspark()
    if kind != "timestamp":
        return column
    if codec == "ltz":
        return functions.timestamp_micros(column)
    epoch = functions.lit("1970-01-01 00:00:00").cast("timestamp_ntz")
    return functions.timestamp_add("MICROSECOND", column, epoch)


def _check_columns(sdf, columns: list[str], value: str) -> None:
    """ValueError for a missing column (the value column too, before its type is read) or a non-numeric value."""
    _, types = _require_pyspark()
    for column in columns + [value]:
        if column not in sdf.columns:
            raise ValueError(f"column {column!r} is missing; the DataFrame has columns {sdf.columns}")
    if not isinstance(sdf.schema[value].dataType, types.NumericType):
        raise ValueError(
            f"column {value!r} has type {sdf.schema[value].dataType.simpleString()}; it must be numeric"
        )


# The scores table's own columns, then the alerts' (the list kept in tsanomaly.base, so the two stay one);
# a detector's explanation columns join them in _check_names (BaseDetector.alert_columns).
_SCORE_NAMES = ("reason", "score", "scores")
_OUTPUT_NAMES = _SCORE_NAMES + ALERT_COLUMNS


def _context_list(context) -> list[str]:
    """The context column names as a list: at least one, each a string."""
    names = [context] if isinstance(context, str) else list(context)
    if not names:
        raise ValueError("context must name at least one column (the columns that identify a series)")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"context column names must be strings, got {bad}")
    return names


def _case_sensitive(spark) -> bool:
    """Whether ``spark`` tells column names apart by letter case (``spark.sql.caseSensitive``, false by default)."""
    try:
        return str(spark.conf.get("spark.sql.caseSensitive", "false")).strip().lower() == "true"
    except Exception:  # noqa: BLE001 - a session that cannot say: Spark's default
        return False


def _name_key(case_sensitive: bool):
    """The form in which Spark compares column names: as they are, or lower-cased.

    By default Spark resolves ``Reason`` and ``reason`` to one column, so a user's
    column named like one tsanomaly adds, up to letter case, passed an exact
    comparison and failed later with AMBIGUOUS_REFERENCE (at score, save, failed()).
    """
    return (lambda name: name) if case_sensitive else str.lower


_CASE_HINT = " (Spark compares column names regardless of letter case unless spark.sql.caseSensitive is true)"


def _check_names(names: list[str], time: str, value: str | None = None, detector=None,
                 case_sensitive: bool = False) -> None:
    """ValueError when a context or time column would collide with an output or internal column.

    The scores table holds the context columns, the time column, ``score`` and
    ``reason``; the alerts table the context columns and the alert columns,
    the explanation columns of ``detector`` (a detector or its class) included.
    The value column is not output, but it must be none of the others. Names
    are compared as the session compares them: regardless of letter case
    unless ``case_sensitive`` (:func:`_case_sensitive`).
    """
    key = _name_key(case_sensitive)
    hint = "" if case_sensitive else _CASE_HINT
    outputs = _SCORE_NAMES + (detector.alert_columns() if detector is not None else ALERT_COLUMNS)
    taken = {key(n) for n in outputs} | {key(time)}
    context_keys = [key(n) for n in names]
    clash = [n for n, k in zip(names, context_keys)
             if k in taken or n.startswith("_") or context_keys.count(k) > 1]
    if clash:
        raise ValueError(
            f"context column(s) {clash} clash with the time column, with output columns {list(outputs)}, "
            f"with each other or with tsanomaly.spark's internal columns (leading '_'){hint}; rename them"
        )
    # The time column is in the scores table only: beside the exact output names (refused as ever),
    # the names that table holds are refused up to letter case too.
    if time in _OUTPUT_NAMES or key(time) in {key(n) for n in _SCORE_NAMES}:
        raise ValueError(
            f"time column {time!r} clashes with the output columns {list(_OUTPUT_NAMES)} "
            f"(the scores table would hold two columns of that name){hint}; rename it"
        )
    if value is not None and (key(value) == key(time) or key(value) in context_keys):
        raise ValueError(f"value column {value!r} is also the time column or a context column{hint}")


def _check_state_names(names: list[str], specs: list, case_sensitive: bool = False) -> None:
    """ValueError when a context column has the name of a per-context state column (``specs``), which
    the state table holds beside it; compared as :func:`_check_names` compares names."""
    key = _name_key(case_sensitive)
    columns = {key(spec["column"]) for spec in specs}
    clash = [n for n in names if key(n) in columns]
    if clash:
        raise ValueError(
            f"context column(s) {clash} clash with the detector's per-context state columns "
            f"{[spec['column'] for spec in specs]}{'' if case_sensitive else _CASE_HINT}; rename them"
        )


def _keys(names: list[str]) -> list[str]:
    """Internal names of the context columns (``_k0``, ...) while the shards run.

    PySpark's ``applyInPandas`` reads its input columns by name unquoted, so a
    context column named ``a.b`` would be taken for a struct field; the user's
    names come back on the outputs. (A leading ``_`` is refused in context names.)
    """
    return [f"_k{k}" for k in range(len(names))]


# Spark's integer types, narrowest first: a label of one is read unchanged as any wider one.
_INTEGER_TYPES = ("tinyint", "smallint", "int", "bigint")


def _check_context_types(sdf, context_types: dict) -> None:
    """ValueError when a context column of ``sdf`` has another type than at fit (``context_types``).

    :func:`score` casts the new labels to the fitted types to match them with the
    fitted state, and a cast can change a label: the string "13335" was fitted, the
    double 13335.0 arrives as "13335.0" and every context was unseen (scored from a
    cold start, without a word); "AS13335" cast to bigint is null (the rows left out
    as unlabelled) or fails under ANSI mode. Only casts that keep the labels are taken:
    an integer type into a wider one, or into text (13335 is "13335", as on one machine).
    """
    for name, fitted in context_types.items():
        new = sdf.schema[name].dataType.simpleString()
        if new == fitted or (new in _INTEGER_TYPES and fitted in _INTEGER_TYPES
                             and _INTEGER_TYPES.index(new) <= _INTEGER_TYPES.index(fitted)):
            continue
        if new in _INTEGER_TYPES and fitted == "string":
            # Integers into text are exact ("13335"), the rule of tsanomaly.io.labels_as_text and
            # of a single machine's context_rows: a model from `tsanomaly fit` holds text labels.
            continue
        raise ValueError(
            f"context column {name!r} is {new} in the new data but was {fitted} at fit, so its labels would not "
            f"match the fitted contexts' (a cast can rewrite or lose them: 13335.0 as a string is '13335.0'); "
            f"convert the column to {fitted} first, so that each context's label is the one it had at fit"
        )


def _prepared(sdf, names: list[str], time: str, value: str, codec: str, context_types=None):
    """The columns a shard needs: the context columns (renamed :func:`_keys`), ``_t`` (epoch
    micros or NTZ timestamp), ``_v`` (double). Rows without a context label are still there."""
    functions, _ = _require_pyspark()
    t = functions.unix_micros(_col(time)) if codec == "ltz" else _col(time)
    contexts = [(_col(n) if context_types is None else _col(n).cast(context_types[n])).alias(k)
                for n, k in zip(names, _keys(names))]
    return sdf.select(*contexts, t.alias("_t"), _col(value).cast("double").alias("_v"))


def _labelled(names: list[str]):
    """Spark condition: the row has every context column (a context needs a label to carry a reason)."""
    condition = None
    for n in names:
        condition = _col(n).isNotNull() if condition is None else condition & _col(n).isNotNull()
    return condition


def _unlabelled_counts(names: list[str]) -> list:
    """Aggregates of the rows without a label: ``_unlabelled`` (any context column null), ``_null<k>`` (column k)."""
    functions, _ = _require_pyspark()
    return ([functions.sum((~_labelled(names)).cast("long")).alias("_unlabelled")]
            + [functions.sum(_col(n).isNull().cast("long")).alias(f"_null{k}") for k, n in enumerate(names)])


def _report_unlabelled(totals, names: list[str], where: str, stacklevel: int) -> int:
    """Warn about the rows left out for a null context column (``totals``: the sums of
    :func:`_unlabelled_counts`); returns how many rows were left out."""
    n_rows = int(totals["_unlabelled"] or 0)
    if n_rows:
        per_column = ", ".join(f"{name!r} in {int(totals[f'_null{k}'])}" for k, name in enumerate(names)
                               if totals[f"_null{k}"])
        warnings.warn(
            f"{n_rows} row(s) have a null context column (null {per_column}) and were left out of the {where}: "
            "without its label a row belongs to no context, so it can neither be used nor carry a reason",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    return n_rows


def _shard_key(names: list[str], n_shards: int):
    functions, _ = _require_pyspark()
    return functions.pmod(functions.xxhash64(*_cols(names)), functions.lit(n_shards))


def _check_shard_args(n_shards, contexts_per_shard) -> None:
    """ValueError for shard counts that are not whole numbers >= 1, before any Spark work (2.5 was
    taken as 2, True as 1, and "100" was a TypeError after a pass over the data)."""
    if n_shards is not None and (not is_int(n_shards) or n_shards < 1):
        raise ValueError(f"n_shards must be None or an integer >= 1, got {n_shards!r}")
    if not is_int(contexts_per_shard) or contexts_per_shard < 1:
        raise ValueError(f"contexts_per_shard must be an integer >= 1, got {contexts_per_shard!r}")


def _n_shards(spark, n_contexts: int, contexts_per_shard: int, n_shards: int | None) -> int:
    """Shards for ``n_contexts``; the arguments were checked by :func:`_check_shard_args` up front."""
    if n_shards is not None:
        return int(n_shards)
    try:
        parallelism = spark.sparkContext.defaultParallelism
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        parallelism = 2
    # At least two shards per core, so a slow shard does not leave cores idle.
    return max(2 * parallelism, math.ceil(n_contexts / contexts_per_shard), 1)


def _fit_grid(prepared, names, time: str, codec: str, freq, zone: str | None = None) -> tuple[dict, int, int]:
    """The common time grid of the history (as ``Panel.from_frame`` infers it), a context count
    estimate and the number of rows left out for a null context column (with a warning).

    With ``zone`` the timestamps are read as ``Panel.from_frame`` reads a column in that zone (a
    ``TIMESTAMP``'s instants, a ``TIMESTAMP_NTZ``'s wall clock there): a grid of days or weeks is
    then laid on the zone's wall clock (the grid gets ``"tz"``, and its ``start`` is on that clock),
    any other grid is naive UTC as without a zone (a ``TIMESTAMP_NTZ`` column is refused for it).

    One job: rows per distinct timestamp. A context has at most one row per
    timestamp, so the largest count estimates the number of contexts. ``prepared``
    (:func:`_prepared`: the context columns ``names`` under their :func:`_keys`)
    still holds the rows without a context label: they are counted, and ignored.
    """
    functions, _ = _require_pyspark()
    keys = _keys(names)
    labelled = _labelled(keys)
    # The group of rows without a timestamp gets a placeholder time and a flag, so that the
    # time column arrives without a null (a nullable bigint would reach pandas as float64).
    stand_in = functions.lit(0) if codec == "ltz" else functions.lit("1970-01-01 00:00:00").cast("timestamp_ntz")
    unlabelled = ["_unlabelled"] + [f"_null{k}" for k in range(len(keys))]
    per_time = (prepared.groupBy(functions.col("_t").alias("_t_or_null"))
                .agg(functions.sum(labelled.cast("long")).alias("rows"), *_unlabelled_counts(keys))
                .select(functions.coalesce(functions.col("_t_or_null"), stand_in).alias("_t"),
                        functions.col("_t_or_null").isNull().alias("_no_time"), "rows", *unlabelled)
                .limit(_MAX_DISTINCT_TIMES + 2).toPandas())
    n_unlabelled = _report_unlabelled(per_time[unlabelled].sum(), names, "fit", stacklevel=3)
    per_time = per_time[~per_time["_no_time"].astype(bool) & (per_time["rows"] > 0)]
    if not len(per_time):
        raise ValueError("the DataFrame is empty (or has no timestamp): no rows to fit on")
    if len(per_time) > _MAX_DISTINCT_TIMES:
        raise ValueError(
            f"more than {_MAX_DISTINCT_TIMES} distinct timestamps: too many to infer one grid; resample the data first"
        )
    stamps = _times_from_spark(per_time["_t"], codec).sort_values(ignore_index=True)

    def context_of(pos):  # only called to word an error
        at = functions.col("_t") == _spark_time_literal(stamps.iloc[pos], codec)
        value = prepared.where(at & labelled).select(*keys).first()
        return tuple(value) if len(names) > 1 else value[0]

    instants = stamps if zone is None else _zoned_instants(stamps, codec, zone, time, context_of)
    try:
        index = _regular_grid(instants, freq, time, context_of, zone=zone)
    except ValueError:
        if codec == "ltz" and zone is None:
            hint = _local_midnights_message(stamps, freq, time, context_of)
            if hint is not None:
                # freq= (which the grid's own message suggests) cannot help: the zone is what is missing.
                raise ValueError(hint) from None
        raise
    step = int(step_duration(index.freq).as_unit("ns").value)  # a week anchored on a weekday is 7 days
    grid = {"start": int(index[0].value), "step": step, "n_times": len(index), "freq": index.freq.freqstr,
            "name": time}
    if index.tz is not None:  # days or weeks on the zone's wall clock
        grid.update(start=int(index[0].tz_localize(None).value), tz=zone)
    elif zone is not None and codec == "ntz":
        # The shards would read the wall clock as UTC: a fixed step's grid is of instants.
        raise ValueError(
            f"column {time!r} is a TIMESTAMP_NTZ, which holds the wall clock of tz={zone!r}, but its grid has steps "
            f"of {index.freq.freqstr}, which are fixed durations laid out in UTC: tz= follows the wall clock for "
            f"days and weeks only; give the column as instants (a TIMESTAMP: functions.to_utc_timestamp(col({time!r}), "
            f"{zone!r})) for a finer grid"
        )
    return grid, int(per_time["rows"].max()), n_unlabelled


def _zoned_instants(stamps: pd.Series, codec: str, zone: str, time: str, context_of) -> pd.Series:
    """The distinct timestamps of a column read in ``zone``, as UTC instants: a ``TIMESTAMP``'s are
    already, a ``TIMESTAMP_NTZ``'s are the zone's wall clock (a time a switch skips or repeats is
    refused, as ``tsanomaly fit --tz`` refuses it)."""
    if codec == "ltz":
        return stamps.dt.tz_localize("UTC")
    local, no_instant = localize_wall_clock(pd.DatetimeIndex(stamps), zone)
    if no_instant.any():
        pos = int(np.flatnonzero(no_instant)[0])
        raise ValueError(
            f"column {time!r}: wall-clock time {stamps.iloc[pos]} for context {context_of(pos)!r} is skipped or "
            f"repeated in {zone} by a daylight-saving switch, so it names no single instant; give such a column "
            f"as instants (a TIMESTAMP)"
        )
    return pd.Series(local, index=stamps.index, name=stamps.name).dt.tz_convert("UTC")


def _local_midnights_message(stamps: pd.Series, freq, time: str, context_of) -> str | None:
    """The error for days stamped at local midnight in a ``TIMESTAMP`` column, or None when the
    timestamps do not look like that.

    A ``TIMESTAMP`` is an instant, read in UTC; midnights of a zone with daylight saving lie 23 or
    25 h apart across a switch, so a daily grid in UTC misses them by an hour. They look like
    that when the step is whole days, every timestamp lies within ``_DST_SHIFT`` of a whole
    number of days from the first, and those off it are off by whole half hours (what a
    daylight-saving switch moves a clock by), more than one of them (a season's days, not one
    mis-stamped row: a row at 00:20 among UTC midnights got this advice, which cannot fit it).
    """
    day = _DAY_NS
    step = step_duration(freq) if freq is not None else pd.Timedelta(day, unit="ns")
    if step is None or int(step.as_unit("ns").value) % day:
        return None
    ns = stamps.astype("int64").to_numpy()
    start = int(ns.min())
    shift = (ns - start) % day
    shift = np.minimum(shift, day - shift)
    if not shift.any() or shift.max() > _DST_SHIFT.value:
        return None
    half_hour = int(pd.Timedelta(minutes=30).value)
    if np.count_nonzero(shift) < 2 or (shift % half_hour).any():
        return None
    pos = int(np.flatnonzero(shift)[0])
    return (
        f"column {time!r}: timestamp {pd.Timestamp(int(ns[pos]))} (UTC) for context {context_of(pos)!r} is "
        f"{pd.Timedelta(int(shift[pos]), unit='ns')} off the grid of days starting at {pd.Timestamp(start)} (UTC), "
        f"as are {int(np.count_nonzero(shift))} of {len(ns)} timestamps. The column looks like midnights of a "
        "local time zone: a TIMESTAMP column is read as UTC instants, and a local day lasts 23 or 25 h across "
        "a daylight-saving switch, so such days fit no grid in UTC (freq= cannot help). Give the zone the days "
        "were counted in, tz='Europe/Berlin': the grid then follows its wall clock, at fit and score time (or "
        "convert the column to the local clock, as a timestamp_ntz without a zone: with "
        f"spark.sql.session.timeZone=UTC, functions.from_utc_timestamp(col({time!r}), 'Europe/Berlin')"
        ".cast('timestamp_ntz'))"
    )


def _spark_time_literal(stamp, codec: str):
    functions, _ = _require_pyspark()
    micros = pd.Timestamp(stamp).value // 1000
    if codec == "ltz":
        return functions.lit(micros)
    return functions.lit(pd.Timestamp(stamp).isoformat()).cast("timestamp_ntz")


def _probe_specs(detector: BaseDetector, grid: dict, names: list[str]) -> tuple[list, list]:
    """Per-context column specs and explanation column kinds, from a fit on a small synthetic panel.

    ``applyInPandas`` needs the output schema before any shard runs; every shard
    then checks that its own state has this layout.
    """
    rng = np.random.default_rng(0)
    t = np.arange(grid["n_times"])
    level = rng.uniform(20, 200, size=(7, 1))  # 7 contexts: unlikely to equal any global array's length
    values = rng.poisson(level * (1.5 + np.sin(2 * np.pi * t / 24))).astype(np.float64)
    labels = [f"probe{k}" for k in range(7)]
    contexts = (pd.Index(labels, name=names[0]) if len(names) == 1 else
                pd.MultiIndex.from_arrays([labels] * len(names), names=names))
    probe = type(detector)(**dict(detector.get_params(), device="cpu"))
    probe.fit(Panel(values, contexts, _grid_index(grid)))
    return split_state(probe, names)[0]["per_context"], _explanation_kinds(probe)


def _explanation_kind(column: pd.Series) -> str:
    kind = column.dtype.kind
    return {"f": "double", "i": "bigint", "u": "bigint", "b": "boolean", "M": "timestamp"}.get(kind, "string")


def _explanation_kinds(detector: BaseDetector) -> list:
    """``[name, kind]`` of each explanation column, read off the alerts of a synthetic burst.

    ``kind`` is one of double, bigint, boolean, timestamp, string; a class may
    declare ``explanation_types = {name: kind}``; a column the probe cannot see
    (no alert raised) is taken as double.
    """
    names = list(type(detector).explanation_columns)
    declared = dict(getattr(type(detector), "explanation_types", {}))
    seen = {}
    if names and len(set(names) - set(declared)):
        try:
            step = pd.tseries.frequencies.to_offset(detector.freq_)
            index = pd.date_range(pd.Timestamp(detector.fit_end_) + step, periods=96, freq=step, name="time")
            contexts = detector.contexts_[:7]
            values = np.tile(50 * (1.5 + np.sin(2 * np.pi * np.arange(96) / 24)), (len(contexts), 1))
            values[:, 60:66] = 1e6  # a burst every detector flags
            table = detector.alerts(Panel(values, contexts, index))
            seen = {name: _explanation_kind(table[name]) for name in names if name in table and len(table)}
        except Exception:  # noqa: BLE001 - the probe only informs the column types
            seen = {}
    return [[name, declared.get(name) or seen.get(name, "double")] for name in names]


def _layout(specs: list) -> list:
    """The device-independent part of per-context specs (a GPU shard may hold float32 where the CPU has float64)."""
    return [{k: s[k] for k in ("attribute", "key", "column", "spark_type", "shape")} for s in specs]


def _fit_mode(detector: BaseDetector) -> str:
    # The detector's own answer first (the baseline's depends on its parameters), then the hooks.
    cls = type(detector)
    per_context = getattr(detector, "fit_is_per_context", None)
    if per_context is None:
        per_context = _class_path(cls) in _PER_CONTEXT_FIT
    if per_context:
        return "per_context"
    if callable(getattr(cls, "_fit_global", None)) and callable(getattr(cls, "_fit_contexts", None)):
        return "global"
    raise NotImplementedError(
        f"{cls.__name__} fits a model across contexts; to fit it on Spark it needs _fit_global(values, panel) "
        "and _fit_contexts(values, panel) -> train_scores (see tsanomaly.spark), or fit_is_per_context = True "
        "when its _fit treats each context on its own"
    )


def _object_columns(types: dict) -> list[str]:
    """The columns of a shard's output that must be object columns (``array<...>`` and ``string``)."""
    return [c for c, t in types.items() if t == "string" or t.startswith("array<")]


def _ddl(name: str, spark_type: str) -> str:
    return f"`{name.replace('`', '``')}` {spark_type}"  # a backtick inside a quoted name is doubled


def fit(
    sdf,
    detector,
    context,
    time: str,
    value: str,
    freq: str | None = None,
    fill: str = "nan",
    *,
    min_observations: int = 1,
    n_shards: int | None = None,
    contexts_per_shard: int = DEFAULT_CONTEXTS_PER_SHARD,
    tail_size: int = DEFAULT_TAIL_SIZE,
    sample_contexts: int = 10_000,
    tz=None,
) -> "SparkModel":
    """Fit a detector on a Spark DataFrame of history, sharded by context.

    Parameters
    ----------
    sdf : pyspark.sql.DataFrame
        Long format: one row per (context, time), as for :meth:`Panel.from_frame`.
    detector : BaseDetector or str
        An (unfitted) detector whose parameters are used, or a short name for
        :func:`tsanomaly.detectors.make_detector`.
    context : str or list of str
        Context column(s), at least one (names may hold dots). Rows with a null
        context column are left out, with a warning that counts them; the count
        is ``global_state["fit"]["n_rows_without_context"]``.
    time : str
        ``TIMESTAMP`` (read in UTC) or ``TIMESTAMP_NTZ`` column (read as the wall clock
        of ``tz`` when given); not named like an output column (``score``, ``reason``, ...).
    value : str
        Numeric column; null is a missing observation.
    freq : str, optional
        Grid step, read as ``Panel.from_frame`` reads it (a fixed step, or a week
        anchored on a weekday such as ``"W"`` or ``"W-MON"``); inferred from the
        distinct timestamps as ``Panel.from_frame`` does when omitted.
        The grid is one for all contexts: a timestamp off it, in any context,
        fails the fit with a ValueError naming that context.
    fill : {"nan", "zero"}
        What absent buckets hold (``"zero"`` for counts).
    min_observations : int, default 1
        Fewest finite observations a context needs to be fitted (an integer >= 0);
        below it the context gets a ``reason`` and scores NaN.
    n_shards : int, optional
        Number of shards; default ``max(2 x default parallelism, n_contexts / contexts_per_shard)``.
    contexts_per_shard : int, default 5000
        Target shard size when ``n_shards`` is not given.
    tail_size : int, default 64
        Largest training scores each context sends to the driver's threshold
        selection (an integer >= 1, or None for all); any size gives the exact
        threshold, a larger one re-fits fewer contexts.
    sample_contexts : int, default 10000
        Contexts the global model is trained on, for detectors with ``_fit_global``
        (an integer >= 1).
    tz : str or zoneinfo.ZoneInfo, optional
        The time zone the days or weeks were counted in, as ``Panel.from_frame``
        takes a column in that zone: a grid of days or weeks then follows the
        zone's wall clock across daylight-saving switches (a 23-hour day is one
        step), at fit and, as the model keeps the zone, at :func:`score` and
        :func:`update`. A ``TIMESTAMP`` column holds instants (local midnights are
        22:00 or 23:00 UTC in Paris), a ``TIMESTAMP_NTZ`` column the zone's wall
        clock. Grids of hours or less stay in UTC, as without a zone (a
        ``TIMESTAMP_NTZ`` column is then refused). Checked as ``tsanomaly fit --tz``
        checks it (:func:`tsanomaly.timezones.check_time_zone`): an IANA name in the
        database's spelling, such as ``"Europe/Paris"``, or a zone object whose key
        or ``str`` is one; ``"europe/paris"``, ``"utc"`` and fixed offsets such as
        ``"UTC+05:00"`` are refused, and so are ``EST``, ``MST`` and ``HST``, fixed
        all year, which would read times written on New York's clock an hour off all
        summer (give ``"America/New_York"``, or ``"Etc/GMT+5"`` for a clock fixed
        all year). UTC under any of its names (``"GMT"``, ``"Etc/Zulu"``, ...) is
        no zone, as ``None``.

    Returns
    -------
    SparkModel
        Global state and a per-context state DataFrame. Its rows are computed
        once and persisted; call :meth:`SparkModel.unpersist` when done.

    Raises
    ------
    ValueError
        Empty data, a missing or non-numeric column, a column named like an output
        column, timestamps that fit no grid or whose grid is far longer than the data (over 10,000 steps
        and 100 per distinct timestamp: a row with a wrong clock, as ``Panel.from_frame`` refuses
        it), a ``tz`` refused above, an argument out of range, a history
        shorter than the detector's ``min_fit_times()`` (checked before any shard
        runs: the model could never alert), or no context that could be fitted.
    NotImplementedError
        For a detector that fits across contexts without the two-step hooks.
    """
    functions, _ = _require_pyspark()
    if isinstance(detector, str):
        from tsanomaly.detectors import make_detector

        detector = make_detector(detector)
    if not isinstance(detector, BaseDetector):
        raise TypeError(f"detector must be a tsanomaly detector or its short name, got {type(detector).__name__}")
    thresholds.validate_threshold_params(detector.threshold, detector.contamination, detector.per_context)
    _check_fill(fill)
    if detector.threshold == "pot" and not detector.per_context:
        from tsanomaly.pot import _check_params

        q0, min_excesses = _pot_defaults(detector.contamination)
        _check_params(detector.contamination, q0, min_excesses)
    if not is_int(min_observations) or min_observations < 0:
        raise ValueError(f"min_observations must be an integer >= 0, got {min_observations!r}")
    _check_shard_args(n_shards, contexts_per_shard)
    if tail_size is not None and (not is_int(tail_size) or tail_size < 1):
        raise ValueError(f"tail_size must be None or an integer >= 1, got {tail_size!r}")
    if not is_int(sample_contexts) or sample_contexts < 1:
        raise ValueError(f"sample_contexts must be an integer >= 1, got {sample_contexts!r}")
    zone = _zone_name(tz, "fit", first_given=True)
    names = _context_list(context)
    _check_columns(sdf, names + [time], value)
    spark = sdf.sparkSession
    case_sensitive = _case_sensitive(spark)
    _check_names(names, time, value, detector, case_sensitive)
    codec = _time_codec(sdf.schema, time)
    cls = type(detector)
    mode = _fit_mode(detector)
    everything = _prepared(sdf, names, time, value, codec)
    grid, n_estimate, n_unlabelled = _fit_grid(everything, names, time, codec, freq, zone)
    # Before any shard runs: a history too short to score anything gives a model that can never alert.
    check_history_length(detector, grid["n_times"], grid["freq"], how=None)
    caveat = getattr(detector, "_calibration_caveat", None)  # STL: calibrated in sample, said here once
    if caveat is not None and (message := caveat(grid["n_times"])):
        warnings.warn(message, CalibrationWarning, stacklevel=2)
    keys = _keys(names)  # the context columns' names until the state is returned
    prepared = everything.where(_labelled(keys))
    shards = _n_shards(spark, n_estimate, contexts_per_shard, n_shards)
    params = _to_json(detector.get_params())
    spec = {
        "context": keys, "grid": grid, "time_codec": codec, "fill": fill, "min_observations": int(min_observations),
        "class": _class_path(cls), "class_module": cls.__module__, "params": params, "device": detector.device,
        "mode": mode, "tail_size": None if tail_size is None else int(tail_size),
        "per_context_threshold": bool(detector.per_context) and isinstance(detector.threshold, str),
    }
    if mode == "global":
        # Drawn among the contexts with enough observed values: one without any (all null) drawn
        # into the sample shrank it and, drawn alone, failed the fit inside a task (a Py4J error).
        observed = (_col("_v").isNotNull() & ~functions.isnan(_col("_v"))
                    & (functions.abs(_col("_v")) != functions.lit(float("inf"))))
        sample_keys = (prepared.where(observed).groupBy(*keys).count()
                       .where(_col("count") >= max(int(min_observations), 1)).select(*keys)
                       .orderBy(functions.xxhash64(*keys), *keys)
                       .limit(int(sample_contexts)))
        sample = prepared.join(sample_keys, keys, "left_semi").withColumn("_one", functions.lit(0))
        global_spec = dict(spec)
        row = sample.groupBy("_one").applyInPandas(
            lambda pdf: _fit_global_shard(pdf, global_spec), "global_state string, reason string").first()
        if row is None:
            raise ValueError(
                f"no context has {max(int(min_observations), 1)} or more observed values to fit the global model on"
            )
        if row["global_state"] is None:
            raise ValueError(
                f"no context of the sample drawn to fit the global model on has usable data ({row['reason']}); "
                "mend those contexts' rows or leave them out"
            )
        shipped = row["global_state"]
        specs = json.loads(shipped)["per_context"]
        explanations = json.loads(shipped)["explanations"]
        spec["global"] = _broadcast(spark, shipped)
        spec["model_id"] = hashlib.sha256(shipped.encode()).hexdigest()
        broadcasts = [spec["global"]]
    else:
        specs, explanations = _probe_specs(detector, grid, keys)
        broadcasts = []
    spec["layout"] = _layout(specs)
    _check_state_names(names, specs, case_sensitive)
    state_types = {s["column"]: s["spark_type"] for s in specs}
    internal = {"_n_finite": "bigint", "_tail": "array<double>", "_tail_min": "double",
                "_truncated": "boolean", "_abs_max": "double", "reason": "string", "_global": "string"}
    types = {**state_types, **internal}
    context_types = {n: sdf.schema[n].dataType.simpleString() for n in names}
    key_types = {k: context_types[n] for n, k in zip(names, keys)}
    schema = ", ".join([_ddl(k, t) for k, t in key_types.items()] + [_ddl(c, t) for c, t in types.items()])
    spec["columns"] = keys + list(types)
    spec["int_columns"] = [c for c, t in types.items() if t == "bigint"]
    spec["bool_columns"] = [c for c, t in types.items() if t == "boolean"]
    spec["object_columns"] = _object_columns({**key_types, **types})
    keyed = prepared.withColumn("_shard", _shard_key(keys, shards))

    def run(frame, run_spec):
        return frame.groupBy("_shard").applyInPandas(lambda pdf: _fit_shard(pdf, run_spec), schema)

    raw = run(keyed, spec).persist()
    persisted = [raw] + broadcasts
    shared = [row["_global"] for row in raw.where(functions.col("_global").isNotNull())
              .select("_global").distinct().collect()]
    if not shared:
        first = raw.where(functions.col("reason").isNotNull()).select(*keys, "reason").first()
        raise ValueError(f"no context could be fitted; for example {tuple(first[:-1])}: {first['reason']}")
    if len(shared) > 1:
        raise ValueError(_describe_shard_difference(spec["class"], shared))

    def refit(suspects, current):
        """``current`` with the rows of ``suspects`` fitted again, keeping every training score."""
        again = run(keyed.join(suspects, keys, "left_semi"), dict(spec, tail_size=None))
        return current.join(suspects, keys, "left_anti").unionByName(again)

    global_threshold, raw, counts = _global_threshold(detector, raw, keys, refit, persisted)
    if not math.isfinite(global_threshold):
        # As BaseDetector.fit warns (the shards calibrate on the executors, out of sight).
        warnings.warn(
            f"{spec['class']}: no training score was finite in any shard, so the global threshold is "
            f"{global_threshold} and nothing can alert; fit on a longer history or use a shorter window",
            CalibrationWarning,
            stacklevel=2,
        )
    shard_global = json.loads(shared[0])
    g_state = dict(shard_global["state"])
    _encode_state("global_threshold_", float(global_threshold), g_state, {})
    global_state = {
        "format": SPARK_MODEL_FORMAT,
        "version": SPARK_MODEL_FORMAT_VERSION,
        "class": spec["class"],
        "params": params,
        "state": g_state,
        "arrays": shard_global["arrays"],
        "per_context": specs,
        "context": names,
        "explanations": explanations,
        # A zone is the grid's for days and weeks; for a grid of instants (hours or less), the zone its
        # times were read in, whose wall clock a TIMESTAMP_NTZ at score would hold (refused, _batch).
        "data": {"time": time, "value": value, "fill": fill, "time_type": codec, "context_types": context_types,
                 **({"tz": grid["tz"]} if "tz" in grid else {"read_tz": zone} if zone is not None else {})},
        "fit": {"n_contexts": counts["n"], "n_failed": counts["failed"], "n_refitted_for_threshold": counts["refitted"],
                "grid": grid, "n_shards": shards, "mode": mode, "n_rows_without_context": n_unlabelled},
    }
    fixed = functions.col("threshold_").isNull() | functions.isnan("threshold_")
    threshold_column = (functions.when(fixed, functions.lit(float(global_threshold)))
                        .otherwise(functions.col("threshold_")))
    state = raw.select(*[_col(k).alias(n) for k, n in zip(keys, names)],
                       *[threshold_column.alias(c) if c == "threshold_" else _col(c) for c in state_types], "reason")
    return SparkModel(global_state, state, persisted)


def _describe_shard_difference(class_path: str, shared: list[str]) -> str:
    states = [json.loads(s) for s in shared]
    keys = set()
    for part in ("state", "arrays", "per_context"):
        first = states[0][part]
        for other in states[1:]:
            if isinstance(first, dict):
                keys |= {k for k in set(first) | set(other[part]) if first.get(k) != other[part].get(k)}
            elif first != other[part]:
                keys.add(part)
    return (
        f"{class_path} is not separable by context: its fitted global state differs between shards "
        f"({sorted(keys)}); give it _fit_global/_fit_contexts so that tsanomaly.spark trains that part once"
    )


def _pot_defaults(contamination: float) -> tuple[float, int]:
    """``initial_quantile`` and ``min_excesses`` that ``thresholds.calibrate`` gives ``pot_threshold``:
    its initial quantile for this contamination (the same function), ``min_excesses`` its default."""
    from tsanomaly.pot import DEFAULT_MIN_EXCESSES

    return thresholds._pot_initial_quantile(contamination), DEFAULT_MIN_EXCESSES


def _broadcast(spark, payload: str):
    """A broadcast of the model's global state (Spark Connect has none: the payload then ships per task)."""
    try:
        return spark.sparkContext.broadcast(payload)
    except Exception:  # noqa: BLE001 - Spark Connect
        return payload


def _global_threshold(detector, raw, names, refit, persisted) -> tuple[float, object, dict]:
    """``(global threshold, fit output, counts)``: ``calibrate``'s global threshold over all training scores.

    ``counts`` holds ``n`` (contexts) and ``failed`` (contexts with a reason) of the fit output, and
    ``refitted``: how many contexts were fitted again for their full tails.

    Exact: when a context's cut tail may hide scores above the deepest order
    statistic used, those contexts are fitted again with their full tails (the
    selected value can only rise, so one round settles it).
    """
    functions, _ = _require_pyspark()
    threshold = detector.threshold
    refitted = 0
    for _attempt in range(3):
        # Spark's max takes NaN for the largest double: the contexts without a finite score are left out.
        abs_max = functions.col("_abs_max")
        totals = raw.agg(functions.sum("_n_finite").alias("scores"),
                         functions.sum(functions.size("_tail")).alias("kept"),
                         functions.count(functions.lit(1)).alias("n"),
                         functions.count("reason").alias("failed"),
                         functions.max(functions.when(~functions.isnan(abs_max), abs_max)).alias("largest")).first()
        counts = {"n": int(totals["n"]), "failed": int(totals["failed"]), "refitted": refitted}
        n, m = int(totals["scores"] or 0), int(totals["kept"] or 0)
        if not isinstance(threshold, str):
            return float(threshold), raw, counts
        if n == 0:
            return float("inf"), raw, counts
        if threshold == "quantile":
            value, deepest = _quantile_threshold(raw, n, m, 1.0 - detector.contamination)
        else:
            value, deepest = _pot_threshold(raw, n, m, detector.contamination, float(totals["largest"]),
                                            per_context=bool(detector.per_context))
        hidden = functions.col("_truncated")
        if deepest is not None:
            hidden = hidden & (functions.col("_tail_min") > functions.lit(float(deepest)))
        suspects = raw.where(hidden).select(*_cols(names)).persist()
        persisted.append(suspects)
        n_suspects = suspects.count()
        if n_suspects == 0:
            if value is None:
                raise RuntimeError("the training score tails are shorter than their counts say")
            return value, raw, counts
        refitted += n_suspects
        raw = refit(suspects, raw).persist()
        persisted.append(raw)
    raise RuntimeError("the global threshold did not settle after re-fitting contexts with their full tails")


def _tail_values(raw):
    functions, _ = _require_pyspark()
    return raw.select(functions.explode("_tail").alias("v"))


def _top_values(raw, k: int) -> np.ndarray:
    """The ``k`` largest tail values, descending."""
    functions, _ = _require_pyspark()
    top = _tail_values(raw).orderBy(functions.desc("v")).limit(int(k)).toPandas()["v"]
    return top.to_numpy(np.float64)


def _desc_order_statistics(raw, m: int, ranks: list[int]) -> dict:
    """Values at descending ranks (0 = largest) of the ``m`` tail values, exactly.

    Up to ``_COLLECT_LIMIT`` values are collected with ``orderBy().limit()`` (each
    partition keeps its top k). Deeper ranks are bracketed with ``approxQuantile``,
    the bracket's position is fixed by exact counts, and only the values inside it
    are collected.
    """
    functions, _ = _require_pyspark()
    deepest = max(ranks)
    if deepest + 1 <= _COLLECT_LIMIT:
        top = _top_values(raw, deepest + 1)
        return {r: float(top[r]) for r in ranks}
    values = _tail_values(raw).persist()
    try:
        rel_err, slack_factor = 1e-4, 2.0
        for _attempt in range(8):
            low_asc, high_asc = m - 1 - max(ranks), m - 1 - min(ranks)
            slack = slack_factor * rel_err * m + 1
            probabilities = [max(0.0, (low_asc - slack) / (m - 1)), min(1.0, (high_asc + slack) / (m - 1))]
            low, high = values.approxQuantile("v", probabilities, rel_err)
            v = functions.col("v")
            counts = values.agg(functions.sum((v > high).cast("long")).alias("above"),
                                functions.sum(((v >= low) & (v <= high)).cast("long")).alias("inside")).first()
            above, inside = int(counts["above"] or 0), int(counts["inside"] or 0)
            if inside > _COLLECT_LIMIT:
                rel_err /= 10
                continue
            if above <= min(ranks) and max(ranks) < above + inside:
                between = (values.where((v >= low) & (v <= high)).orderBy(functions.desc("v"))
                           .toPandas()["v"].to_numpy(np.float64))
                return {r: float(between[r - above]) for r in ranks}
            slack_factor *= 4  # the sketch missed its guarantee: widen the bracket
        raise RuntimeError("could not bracket the threshold's order statistics")
    finally:
        values.unpersist()


def _quantile_threshold(raw, n: int, m: int, q: float):
    """``(np.quantile(all finite scores, q), deepest value used)``; ``(None, None)`` when the tails are too short."""
    lower, upper, gamma = linear_quantile_positions(n, q)
    deep, shallow = n - 1 - lower, n - 1 - upper  # descending ranks
    if deep >= m:
        return None, None
    stats = _desc_order_statistics(raw, m, sorted({deep, shallow}))
    return lerp(stats[deep], stats[shallow], gamma), stats[deep]


def _pot_threshold(raw, n: int, m: int, risk: float, largest: float, per_context: bool = False):
    """``pot_threshold`` over all finite training scores, exactly.

    ``largest`` is the largest absolute finite score, which sets pot's tie tolerance: the
    excesses and the fallback to the quantile are decided by pot's own rules (``_tie_limit``,
    ``_tail_threshold``), so that the threshold is the single-machine one. Every score above
    the initial threshold lies in the top ``deep + 1`` collected, and so does every score above
    the GPD's threshold, which is higher. ``per_context`` only words the refusal past
    ``_COLLECT_LIMIT``: the global threshold is then the fallback of the per-context ones.
    """
    functions, _ = _require_pyspark()
    from tsanomaly.pot import _fallback_message, _tail_threshold, _tie_limit

    initial_quantile, min_excesses = _pot_defaults(risk)
    lower, _, _ = linear_quantile_positions(n, initial_quantile)
    deep = n - 1 - lower  # pot's initial threshold: the "lower" order statistic
    if deep >= m:
        return None, None
    if deep + 1 > _COLLECT_LIMIT:
        needs = f"needs the top {deep + 1} of all {n} training scores on the driver, more than {_COLLECT_LIMIT}"
        if per_context:
            # per_context=True is already set: name the global fallback that still needs the scores.
            raise ValueError(
                f"threshold='pot' with per_context=True still calibrates one global threshold, the fallback "
                f"for contexts with fewer than {thresholds.MIN_SCORES_PER_CONTEXT} finite training scores and "
                f"for contexts unseen at fit, and its GPD fit {needs}; use threshold='quantile' "
                "(per context too), whose global threshold Spark selects without collecting all of them"
            )
        raise ValueError(
            f"threshold='pot' {needs}; use threshold='quantile' (per_context=True would not help: its "
            "fallback is this global threshold)"
        )
    ordered = _top_values(raw, deep + 1)
    t = ordered[deep]
    excesses = ordered[ordered > _tie_limit(t, largest)] - t
    value, _, _ = _tail_threshold(excesses, t, n, risk, min_excesses, lambda z: int((ordered > z).sum()))
    if value is None:
        # The quantile 1 - risk lies above the initial one (risk < 1 - initial_quantile): within the top.
        low_r, up_r, gamma_r = linear_quantile_positions(n, 1.0 - risk)
        value = lerp(ordered[n - 1 - low_r], ordered[n - 1 - up_r], gamma_r)
        warnings.warn(_fallback_message(excesses.shape[0], n, risk, initial_quantile, min_excesses),
                      RuntimeWarning, stacklevel=3)
    return value, ordered[deep]


class SparkModel:
    """A detector fitted on Spark: global state (a JSON-able dict) and per-context state (a Spark DataFrame).

    Parameters
    ----------
    global_state : dict
        Class, parameters, global fitted attributes, the per-context column
        layout, and the data description (context, time and value columns).
    state : pyspark.sql.DataFrame
        One row per context: the context columns, one column per per-context
        fitted array, and ``reason`` (null, or why the context has no usable state: it could not
        be fitted, or an :func:`update` raised on it).
    """

    def __init__(self, global_state: dict, state, persisted=()):
        self.global_state = global_state
        self.state = state
        self._persisted = list(persisted)

    @property
    def context(self) -> list[str]:
        """The context columns the model was fitted by, in order."""
        return list(self.global_state["context"])

    @property
    def detector_class(self) -> str:
        """The fitted detector's class, as its module and name (``tsanomaly.detectors.stl.STLDetector``)."""
        return self.global_state["class"]

    def __repr__(self) -> str:
        fit_info = self.global_state.get("fit", {})
        return (f"SparkModel({self.global_state['class'].rsplit('.', 1)[-1]}, context={self.context}, "
                f"n_contexts={fit_info.get('n_contexts', '?')}, n_failed={fit_info.get('n_failed', '?')})")

    def failed(self):
        """DataFrame of the contexts that could not be fitted, or that an update raised on: context
        columns and ``reason``."""
        functions, _ = _require_pyspark()
        return self.state.where(functions.col("reason").isNotNull()).select(*_cols(self.context), "reason")

    def to_detector(self, device: str | None = None) -> BaseDetector:
        """Collect the per-context state to the driver and rebuild a single-machine detector.

        Contexts with a ``reason`` are left out (they score as unseen, from a cold start where the
        detector has one): those that could not be fitted, and those an :func:`update` raised on,
        whose state no longer ends where the model's does (:func:`score` gives them null scores).
        """
        functions, _ = _require_pyspark()
        rows = self.state.where(functions.col("reason").isNull()).toPandas()
        return merge_state(self.global_state, rows, device)

    def save(self, path: str, mode: str = "error") -> None:
        """Write ``path/global`` (the global state, one JSON line) and ``path/state`` (Parquet).

        Any file system Spark writes to works (local, HDFS, S3); ``mode`` is
        Spark's save mode: ``"error"`` (or ``"errorifexists"``), ``"overwrite"`` or
        ``"ignore"``.

        Raises
        ------
        ValueError
            For ``mode="append"`` (a second model appended to the first is no model:
            two global lines and two rows per context) or any other mode, before
            anything is written.
        """
        mode = str(mode).lower()  # as Spark reads it ("Overwrite", "ErrorIfExists")
        if mode not in _SAVE_MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, _SAVE_MODES))}, got {mode!r}"
                             + (": appending a model to another makes a damaged one" if mode == "append" else ""))
        spark = self.state.sparkSession
        line = json.dumps(self.global_state)
        spark.createDataFrame([(line,)], "value string").coalesce(1).write.mode(mode).text(f"{path}/global")
        self.state.write.mode(mode).parquet(f"{path}/state")

    def unpersist(self) -> None:
        """Release the cached fit output (the per-context state is then recomputed if used again)."""
        for item in self._persisted:
            if hasattr(item, "unpersist"):
                item.unpersist()
        self._persisted = []


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception (a Py4J error's first line says only which call failed)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("An error occurred while calling"):
        lines = lines[1:]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


# Fields of a saved global state: name -> type (the optional ones are checked when present).
_GLOBAL_FIELDS = {"class": str, "params": dict, "state": dict, "arrays": dict, "per_context": list, "context": list}
_OPTIONAL_GLOBAL_FIELDS = {"data": dict, "fit": dict, "explanations": list}
_SPEC_FIELDS = {"attribute": str, "key": (str, type(None)), "column": str, "spark_type": str, "dtype": str,
                "shape": list}


def _check_global_state(global_state) -> None:
    """ValueError (saying what is wrong) unless ``global_state`` has the structure :func:`fit` writes."""
    if not isinstance(global_state, dict):
        raise ValueError(f"the global state is a JSON {type(global_state).__name__}, not an object")
    for fields, required in ((_GLOBAL_FIELDS, True), (_OPTIONAL_GLOBAL_FIELDS, False)):
        for field, kind in fields.items():
            if field not in global_state:
                if required:
                    raise ValueError(f"the global state lacks {field!r}")
                continue
            if not isinstance(global_state[field], kind):
                raise ValueError(f"the global state's {field!r} is not a JSON {kind.__name__}")
    names = global_state["context"]
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"the global state's context columns {names!r} are not a list of names")
    for spec in global_state["per_context"]:
        if not isinstance(spec, dict) or not all(isinstance(spec.get(f), k) for f, k in _SPEC_FIELDS.items()):
            raise ValueError(f"the global state has a malformed per-context column {spec!r}")
        if not all(is_int(d) and d >= 0 for d in spec["shape"]):
            raise ValueError(f"per-context column {spec['column']!r} has a malformed shape {spec['shape']!r}")
    data = global_state.get("data", {})
    for field in ("time", "value"):
        if field in data and not isinstance(data[field], str):
            raise ValueError(f"the global state's data {field!r} is not a column name")
    if "fill" in data:
        _check_fill(data["fill"])
    if not isinstance(data.get("context_types", {}), dict):
        raise ValueError("the global state's data 'context_types' is not a JSON object")
    if "tz" in data and (not isinstance(data["tz"], str) or _zone_name(data["tz"], "the global state's data 'tz'")
                         is None):
        raise ValueError(f"the global state's data 'tz' is not the name of a time zone with daylight saving: "
                         f"{data['tz']!r}")
    for item in global_state.get("explanations", []):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or item[1] not in ("double", "bigint", "boolean", "timestamp", "string")):
            raise ValueError(f"the global state has a malformed explanation column {item!r}")


def _check_state_schema(state, global_state: dict) -> None:
    """ValueError unless the per-context state has every column the model reads, with its type."""
    needed = {name: global_state.get("data", {}).get("context_types", {}).get(name) for name in global_state["context"]}
    needed.update({spec["column"]: spec["spark_type"] for spec in global_state["per_context"]})
    needed["reason"] = "string"
    have = {field.name: field.dataType.simpleString() for field in state.schema.fields}
    missing = [column for column in needed if column not in have]
    if missing:
        raise ValueError(f"the per-context state lacks column(s) {missing}")
    wrong = {column: have[column] for column, kind in needed.items() if kind is not None and have[column] != kind}
    if wrong:
        raise ValueError(
            "per-context state column(s) of the wrong type: "
            + ", ".join(f"{c} is {t}, the model needs {needed[c]}" for c, t in wrong.items())
        )


def load_model(spark, path: str) -> SparkModel:
    """Read a :class:`SparkModel` written by :meth:`SparkModel.save`.

    The detector class must be one of tsanomaly's, or already imported: as with
    :func:`tsanomaly.load`, a model file cannot make Spark import a module.

    Raises
    ------
    ValueError
        When ``path`` holds no Spark model or a damaged one, naming the path and what
        is wrong: ``global/`` missing, not one line of JSON or not a model's global
        state; a detector class, parameters or fitted state that cannot be rebuilt
        (the detector is built once on the driver, on the CPU, to check); ``state/``
        unreadable, or without a column the model needs, or with another type. (The
        per-context rows themselves are read when scoring: a row whose array has the
        wrong length fails the scoring task, saying the state is damaged.)
    """
    damaged = f"{path} is not a tsanomaly Spark model or is damaged"
    try:
        lines = [row["value"] for row in spark.read.text(f"{path}/global").collect()]
    except Exception as exc:  # noqa: BLE001 - a missing path, an unreadable file: Spark's own errors
        raise ValueError(f"{damaged}: cannot read {path}/global ({_first_line(exc)})") from exc
    if len(lines) != 1:
        raise ValueError(f"{damaged}: {path}/global should hold one line of JSON, found {len(lines)}")
    try:
        global_state = json.loads(lines[0])
    except ValueError as exc:
        raise ValueError(f"{damaged}: {path}/global is not valid JSON ({exc})") from exc
    if not isinstance(global_state, dict) or global_state.get("format") != SPARK_MODEL_FORMAT:
        found = global_state.get("format") if isinstance(global_state, dict) else type(global_state).__name__
        raise ValueError(f"{damaged}: {path}/global is not a tsanomaly Spark model's global state ({found!r})")
    if global_state.get("version") != SPARK_MODEL_FORMAT_VERSION:
        raise ValueError(f"{path}: Spark model version {global_state.get('version')!r} is not supported")
    try:
        _check_global_state(global_state)
        # The detector the workers build, built once here: bad parameters or state fail now, not in a task.
        template = _template(global_state, device="cpu")
        _check_base_state(template)
        thresholds.validate_threshold_params(template.threshold, template.contamination, template.per_context)
        validate = getattr(template, "_validate", None)
        if callable(validate):
            validate()
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{damaged}: {exc}") from exc
    try:
        state = spark.read.parquet(f"{path}/state")
    except Exception as exc:  # noqa: BLE001 - missing, or not Parquet: Spark's (Py4J) errors
        raise ValueError(f"{damaged}: cannot read {path}/state ({_first_line(exc)})") from exc
    try:
        _check_state_schema(state, global_state)
    except ValueError as exc:
        raise ValueError(f"{damaged}: {exc}") from exc
    return SparkModel(global_state, state)


def _zone_name(tz, where: str, first_given: bool = False) -> str | None:
    """The IANA database's name of the zone ``tz`` (None for None and for UTC under any of its names,
    :data:`tsanomaly.timezones.UTC_NAMES`: no daylight saving, so its grids stay naive UTC, as
    ``Panel.from_frame`` keeps them), or a ValueError naming ``where``.

    The jobs' rule (:func:`tsanomaly.timezones.check_time_zone`): an IANA name in its own spelling,
    which the model keeps; ``"utc"`` (did you mean UTC?) and fixed offsets such as ``"UTC+05:00"``, which
    pandas reads, are refused. With ``first_given`` (the zone given to :func:`fit` or
    :func:`from_detector`), so are ``EST``, ``MST`` and ``HST``, as by ``tsanomaly fit --tz``: fixed
    all year, they read times written on New York's clock an hour off all summer. A saved model's
    zone is not checked for them, so models that hold one keep working.
    """
    if tz is None:
        return None
    if not isinstance(tz, str):
        tz = str(getattr(tz, "key", tz))  # a zoneinfo.ZoneInfo (its key) or a pytz zone (its str)
    try:
        tz = check_time_zone(tz, given_as=f"tz={tz!r}")
        if first_given:
            check_not_a_fixed_abbreviation(tz, given_as=f"tz={tz!r}")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return None if tz in UTC_NAMES else tz


def _shipped_fit_end(detector: BaseDetector, tz) -> tuple[str, str | None]:
    """``(fit_end_, zone)`` of a detector fitted on a DatetimeIndex grid, as :func:`from_detector` ships it.

    A naive ``fit_end_`` stays as it is, and so does a zoned one with ``tz``, the zone of its grid,
    for steps of days or weeks: the shards then build the grid in that zone, stepping by its wall
    clock as one machine does (:func:`tsanomaly.base.steps_by_wall_clock`). Otherwise the zoned end
    becomes the same instant in UTC, without a zone: the shards' grids are naive UTC, and a fitted
    end that kept its zone made each shard's detector refuse its panel ("the fitted time grid has a
    time zone and the panel's has none"). The state is positional, so the same instants score alike
    on a grid of hours or less; days and weeks without ``tz`` are stepped in UTC, off the wall clock
    after a switch (warned of: a saved ``fit_end_`` keeps the UTC offset, not the zone, so a zone with
    daylight saving cannot be told from one without, UTC itself or London in winter at offset 0).
    """
    fit_end = pd.Timestamp(detector.fit_end_)
    zone = _zone_name(tz, "from_detector")
    if fit_end.tz is None:
        if zone is not None:
            raise ValueError(f"tz={tz!r}: the detector was fitted on a grid without a time zone (it ends at "
                             f"{detector.fit_end_}); leave tz out, or fit it on zone-aware timestamps")
        return detector.fit_end_, None
    if tz is not None and fit_end.tz_convert(zone or "UTC").utcoffset() != fit_end.utcoffset():
        raise ValueError(
            f"tz={tz!r}: the detector's grid ends at {detector.fit_end_} (UTC offset {fit_end.utcoffset()}), but "
            f"{tz} is at offset {fit_end.tz_convert(zone or 'UTC').utcoffset()} then: give the zone the detector "
            "was fitted in"
        )
    if steps_by_wall_clock(detector.freq_) and zone is not None:
        return detector.fit_end_, zone
    if steps_by_wall_clock(detector.freq_) and tz is None:  # tz="UTC" given: its steps are UTC's
        warnings.warn(
            f"tsanomaly.spark: the detector was fitted on a grid of {detector.freq_} steps with a time zone "
            f"(UTC offset {fit_end.utcoffset()} at its end), shipped without tz= its grid steps in UTC: if that "
            "zone has daylight saving, the points after a switch are off the grid and their contexts are not "
            "scored. Pass tz= the grid's zone (from_detector(..., tz='Europe/Paris')) to step it by the wall "
            "clock there, as one machine does",
            UserWarning,
            stacklevel=3,
        )
    # Whatever the offset at the end: 0 is Europe/London in winter as well as UTC.
    return fit_end.tz_convert("UTC").tz_localize(None).isoformat(), None


def from_detector(spark, detector: BaseDetector, context=None, time: str = "time", value: str = "value",
                  fill: str = "nan", *, tz=None) -> SparkModel:
    """Ship a detector fitted on one machine to Spark (its per-context state becomes a DataFrame).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    detector : BaseDetector
        Fitted on a DatetimeIndex grid. A grid of hours or less with a time zone is
        taken as the instants it holds, in UTC as Spark's timestamps are (the model's
        ``fit_end_`` is the UTC time, without a zone): the scores equal the
        detector's at the same instants.
    context : str or list of str, optional
        Context column names; default: the names of ``detector.contexts_``.
    time, value, fill
        The columns and fill rule :func:`score` uses by default.
    tz : str or zoneinfo.ZoneInfo, optional
        The time zone of a grid of days or weeks (an IANA name such as ``"Europe/Paris"``,
        checked as :func:`fit` checks its ``tz``: UTC under any name is no zone, EST, MST
        and HST are refused; a fitted detector keeps only the UTC offset of its last point,
        not the zone). The model keeps it, and :func:`score` and :func:`update` step the
        grid by the wall clock there, as one machine does (a 23-hour day across a switch is one step): a ``TIMESTAMP``
        column's instants are placed by their wall-clock time in that zone, a ``TIMESTAMP_NTZ``
        column is read as that wall clock. Without it, such a grid steps in UTC, which loses
        the points after a daylight-saving switch (a ``UserWarning`` says so). A model from
        ``tsanomaly fit --tz ZONE`` (``job_columns_["tz"]``) defaults to ``ZONE``; on its
        grid of hours or less, which is of instants, a ``TIMESTAMP_NTZ`` column (a wall
        clock) is refused at :func:`score` and :func:`update`.

    Raises
    ------
    NotImplementedError
        For a detector holding fitted detectors (the ensemble), as :func:`split_state`.
    ValueError
        For a detector fitted on a RangeIndex, column names that clash with the outputs, a
        ``tz`` refused as by :func:`fit`, or one whose UTC offset at the end of the grid is not the grid's
        (or given for a grid without a zone).
    """
    _check_fill(fill)
    # Before any work, as at fit; the zone a model from `tsanomaly fit --tz` holds is not given here, so
    # only checked to be one (_shipped_fit_end): a model saved with EST keeps working.
    _zone_name(tz, "from_detector", first_given=True)
    global_state, frame = split_state(detector, context)
    names = global_state["context"]
    case_sensitive = _case_sensitive(spark)
    _check_names(names, time, value, detector, case_sensitive)
    _check_state_names(names, global_state["per_context"], case_sensitive)
    if detector.freq_ is None:
        raise ValueError("tsanomaly.spark needs a detector fitted on a DatetimeIndex grid, not a RangeIndex")
    # A model from `tsanomaly fit --tz` read its times in that zone: its grid of days or weeks is in it
    # (the tz= to give, unless given), and its finer grid is of instants, which a TIMESTAMP_NTZ column
    # of that zone's wall clock is not (refused at score, see _batch).
    job_zone = (getattr(detector, "job_columns_", None) or {}).get("tz")
    if tz is None and job_zone is not None and steps_by_wall_clock(detector.freq_) \
            and pd.Timestamp(detector.fit_end_).tz is not None:
        tz = job_zone
    fit_end, zone = _shipped_fit_end(detector, tz)
    _encode_state("fit_end_", fit_end, global_state["state"], {})
    frame["reason"] = None
    ddl = {}
    for name in names:
        kind = frame[name].dtype.kind
        ddl[name] = "bigint" if kind in "iu" else "double" if kind == "f" else "boolean" if kind == "b" else "string"
    ddl.update({s["column"]: s["spark_type"] for s in global_state["per_context"]})
    ddl["reason"] = "string"
    schema = ", ".join(_ddl(c, t) for c, t in ddl.items())
    global_state["data"] = {"time": time, "value": value, "fill": fill, "time_type": "ltz",
                            "context_types": {n: ddl[n] for n in names}}
    if zone is not None:
        global_state["data"]["tz"] = zone
    else:
        # A grid of instants whose inputs were read in a zone (tz= on an hourly zoned grid, or the
        # job's --tz): its TIMESTAMP_NTZ inputs would be a wall clock read as UTC (refused, _batch).
        read_in = _zone_name(tz if tz is not None else job_zone, "from_detector")
        if read_in is not None:
            global_state["data"]["read_tz"] = read_in
    global_state["fit"] = {"n_contexts": len(frame), "n_failed": 0, "mode": "single-machine"}
    global_state["explanations"] = _explanation_kinds(detector)
    frame = _finish([frame], list(ddl), [c for c, t in ddl.items() if t == "bigint"],
                    [c for c, t in ddl.items() if t == "boolean"], _object_columns(ddl))
    return SparkModel(global_state, spark.createDataFrame(frame, schema))


class SparkScores:
    """The two outputs of :func:`score`; unpack as ``scores, alerts = tss.score(...)``.

    Attributes
    ----------
    scores : pyspark.sql.DataFrame
        Context columns, the time column, ``score`` (higher = more anomalous;
        null where a point cannot be scored) and ``reason`` (null, or why the
        context was not scored). One row per context and grid point.
    alerts : pyspark.sql.DataFrame
        The columns of :meth:`BaseDetector.alerts`: context columns, ``start``,
        ``end``, ``peak_time``, ``peak_score``, ``n_points``, ``threshold``,
        ``detector`` and the detector's explanation columns (unordered: sort by
        ``peak_score`` for the single-machine order).
    """

    def __init__(self, scores, alerts, cached=()):
        self.scores = scores
        self.alerts = alerts
        self._cached = list(cached)

    def __iter__(self):
        return iter((self.scores, self.alerts))

    def unpersist(self) -> None:
        """Release the cached shard outputs both DataFrames are read from, and the broadcast model.

        Using ``scores`` or ``alerts`` afterwards recomputes them (and sends the model again).
        """
        for item in self._cached:
            if hasattr(item, "unpersist"):
                item.unpersist()
        self._cached = []


def _grid_zone(global_state: dict, freq) -> str | None:
    """The zone whose wall clock a model's grid follows: the model's zone (``data["tz"]``) for steps of
    days or weeks (:func:`tsanomaly.base.steps_by_wall_clock`), else None (a grid of fixed UTC steps)."""
    zone = global_state.get("data", {}).get("tz")
    return zone if zone is not None and steps_by_wall_clock(freq) else None


def _check_zoned_grid(grid: dict) -> None:
    """ValueError unless every point of a zoned grid is one instant (not skipped or repeated by a switch)."""
    try:
        _grid_index(grid)
    # pandas' own zones raise ValueErrors, pytz's NonExistentTimeError / AmbiguousTimeError (not ValueErrors).
    except Exception as exc:  # noqa: BLE001 - re-raised as a ValueError that says which grid
        raise ValueError(
            f"the grid of step {grid['freq']} from {_clock_time(grid['start'], grid)} ({grid['n_times']} points) "
            f"has no single instant for every point: {_first_line(exc)}"
        ) from exc


def _global_attribute(global_state: dict, name: str):
    encoded = global_state["state"].get(name)
    if encoded is None or encoded.get("kind") != "json":
        raise ValueError(f"the model's global state has no {name}")
    return encoded["value"]


@dataclass
class _Batch:
    """What :func:`score` and :func:`update` both need on the driver: the new rows and the
    state keyed by shard, the batch's grid, and the spec entries every shard reads."""

    global_state: dict
    names: list  # the user's context column names
    keys: list  # the names the shards see (_keys)
    key_types: dict
    time: str
    codec: str
    grid: dict
    steps: int  # grid steps from the end of the history to the batch's first point
    spark: object
    cls: type
    new_keyed: object
    state_keyed: object
    spec: dict
    shipped: object


def _batch(sdf, model: SparkModel, context, time, value, fill, n_shards, contexts_per_shard, absent,
           verb: str) -> _Batch:
    """Check the arguments, place the new rows on the fitted grid after the history and shard
    them with the model's state (the driver part of :func:`score` and :func:`update`; ``verb``,
    "score" or "update", words the errors and warnings). Warnings point at the caller's caller."""
    doing = {"score": "scoring", "update": "update"}[verb]
    global_state = model.global_state
    data = global_state.get("data", {})
    fill = fill or data.get("fill", "nan")
    _check_fill(fill)  # before any Spark work, so a typo fails at once
    if absent not in ABSENT_RULES:
        raise ValueError(f"absent must be one of {', '.join(map(repr, ABSENT_RULES))}, got {absent!r}")
    if absent == "zero" and fill != "zero":
        raise ValueError(f"absent='zero' reads a missing row as zero events, which needs fill='zero'; got fill={fill!r}")
    _check_shard_args(n_shards, contexts_per_shard)
    functions, _ = _require_pyspark()
    names = _context_list(context if context is not None else global_state["context"])
    time = time or data.get("time")
    value = value or data.get("value")
    if len(names) != len(global_state["context"]):
        raise ValueError(f"the model has context columns {global_state['context']}, got {names}")
    _check_columns(sdf, names + [time], value)
    _check_names(names, time, value, _detector_class(global_state["class"]), _case_sensitive(sdf.sparkSession))
    codec = _time_codec(sdf.schema, time)
    # The shards see the context columns, of the new data and of the state, under their _keys.
    keys = _keys(names)
    fitted_names = list(global_state["context"])
    state = model.state.select(*[_col(old).alias(k) for old, k in zip(fitted_names, keys)],
                               *_cols([c for c in model.state.columns if c not in fitted_names]))
    context_types = {n: model.state.schema[old].dataType.simpleString() for n, old in zip(names, fitted_names)}
    _check_context_types(sdf, context_types)
    key_types = {k: context_types[n] for n, k in zip(names, keys)}
    everything = _prepared(sdf, names, time, value, codec, context_types)
    labelled = _labelled(keys)
    freq = _global_attribute(global_state, "freq_")
    fit_end = pd.Timestamp(_global_attribute(global_state, "fit_end_"))
    if freq is None:
        raise ValueError("the model was fitted on a RangeIndex grid; tsanomaly.spark scores timestamped data")
    step = step_duration(freq)  # None for months, which no fit on Spark gives (its grids have a fixed step)
    if step is None:
        raise ValueError(f"the model was fitted on a grid of {freq!r} steps, which have no fixed length; "
                         "tsanomaly.spark scores grids of a fixed step")
    step = int(step.as_unit("ns").value)
    zone = _grid_zone(global_state, freq)
    read_in = data.get("read_tz")
    if codec == "ntz" and zone is None and read_in is not None:
        # The wall clock of the zone the model's times were read in, which this grid of instants would
        # read as UTC: hours shifted by the offset, and a phantom hour at each spring switch.
        raise ValueError(
            f"column {time!r} is a TIMESTAMP_NTZ, but the model's times were read in {read_in} (tz= at fit or "
            f"in from_detector, or `tsanomaly fit --tz`) on a grid of {freq} steps, which are instants in UTC: "
            f"give the column as instants (a TIMESTAMP; local times: "
            f"functions.to_utc_timestamp(col({time!r}), {read_in!r}))"
        )
    if zone is not None:
        # Days or weeks in a zone: the steps are fixed on its wall clock, which the grid is laid on.
        fit_end = fit_end.tz_convert(zone)
        end_ns = int(fit_end.tz_localize(None).value)
    else:
        end_ns = int(fit_end.value)
    clock = {} if zone is None else {"tz": zone}
    # The scored grid starts at the first row on the fitted grid after the history, not at the
    # earliest row: one row off the grid or from the history (a late duplicate) failed the whole
    # batch; now, as any off-grid row, it only gives its own context a reason (_shard_data).
    t = functions.col("_t")
    if zone is not None and codec == "ltz":
        # Instants on the zone's wall clock, as epoch micros: where the grid's points fall (the shards
        # place each row again with pandas).
        t = functions.unix_micros(functions.from_utc_timestamp(functions.timestamp_micros(t), zone))
    epoch = functions.lit("1970-01-01 00:00:00").cast("timestamp_ntz")
    t_us = t if codec == "ltz" else functions.timestamp_diff("MICROSECOND", epoch, t)
    end_us, step_us = functions.lit(end_ns // 1000), functions.lit(step // 1000)
    after = labelled & (t_us > end_us)
    on_grid = after & ((t_us - end_us) % step_us == 0)
    not_after = labelled & (t_us <= end_us)
    if zone is None and step % _DAY_NS == 0:
        # Days or weeks stepped in UTC: rows a whole half hour to two hours off them look like local
        # midnights after a daylight-saving switch (a model shipped or fitted without its zone).
        day_us = _DAY_NS // 1000
        shift = functions.pmod(t_us - end_us, functions.lit(day_us))
        shift = functions.least(shift, day_us - shift)
        half_hour = int(pd.Timedelta(minutes=30).value) // 1000
        shifted = (after & (shift != 0) & (shift <= int(_DST_SHIFT.value) // 1000)
                   & (functions.pmod(shift, functions.lit(half_hour)) == 0))
    else:
        shifted = functions.lit(False)
    # One job: the new data's time span (labelled rows), its first row on the grid, the rows at or
    # before the end of the history, those that look shifted by a switch, and the rows without a
    # context label.
    bounds = everything.agg(functions.min(functions.when(labelled, t)).alias("lo"),
                            functions.max(functions.when(labelled, t)).alias("hi"),
                            functions.min(functions.when(on_grid, t)).alias("start"),
                            functions.sum(not_after.cast("long")).alias("n_early"),
                            functions.sum(shifted.cast("long")).alias("n_shifted"),
                            functions.min(functions.when(shifted, t)).alias("first_shifted"),
                            functions.approx_count_distinct(functions.when(labelled, t)).alias("n_stamps"),
                            *_unlabelled_counts(keys)).first()
    _report_unlabelled(bounds, names, doing, stacklevel=3)
    if bounds["lo"] is None:
        raise ValueError(f"the DataFrame is empty: no rows to {verb}")
    prepared = everything.where(labelled)
    lo, hi = (_times_from_spark(pd.Series([bounds["lo"], bounds["hi"]]), codec).astype("int64").to_numpy())
    n_shifted = int(bounds["n_shifted"] or 0)
    switched = ""
    if n_shifted > 1:  # more than one: a season's days, not one mis-stamped row
        first_shifted = _times_from_spark(pd.Series([bounds["first_shifted"]]), codec).iloc[0]
        switched = (
            f"{n_shifted} row(s) of the new data, the earliest at {first_shifted}, lie an hour or two off the "
            f"fitted grid of {freq} steps in UTC (from {fit_end}), as local midnights do after a daylight-saving "
            "switch: give the model the zone its days were counted in (from_detector(..., tz='Europe/Paris'), "
            "fit(..., tz=...)) so that they follow its wall clock"
        )
    if bounds["start"] is None:
        raise ValueError(
            f"no row of the new data is on the fitted grid after the history (step {freq} from {fit_end}); the "
            f"earliest is at {_clock_time(lo, clock)}: new data must follow the fitted history, on its grid"
            + (f". {switched}" if switched else "")
        )
    if switched:
        # Said once on the driver: update would move those contexts on as missing without a word.
        warnings.warn(f"{switched}; their contexts " + ("get \"not on the grid\" as their reason and score NaN"
                      if verb == "score" else "move on as missing over the batch"), UserWarning, stacklevel=3)
    start = int(_times_from_spark(pd.Series([bounds["start"]]), codec).astype("int64").iloc[0])
    n_early = int(bounds["n_early"] or 0)
    if n_early:
        warnings.warn(
            f"{n_early} row(s) of the new data, the earliest at {_clock_time(lo, clock)}, are not after the fitted "
            f"history, which ends at {fit_end}: their contexts "
            + ("get that as their reason and score NaN" if verb == "score" else "move on as missing over the batch")
            + "; leave out the rows already scored (the history's)", UserWarning, stacklevel=3)
    steps = (start - end_ns) // step
    if steps > 1:
        warnings.warn(history_gap_message(
            f"the new data, at {_clock_time(start, clock)},", steps - 1, fit_end,
            remedy="fit again on a recent history, or score the whole span since the fit"), HistoryGapWarning, stacklevel=3)
    n_times = int((int(hi) - start) // step) + 1
    n_stamps = max(int(bounds["n_stamps"] or 0), 1)
    # The rule of Panel.from_frame's grid (and of fit's, built by _regular_grid): one row with a wrong
    # clock (the year 2034) would otherwise make every context's panel that long, in every shard.
    if too_sparse(n_times, n_stamps):
        latest = prepared.where(t == _spark_time_literal(pd.Timestamp(int(hi)), codec)).select(*keys).first()
        raise ValueError(
            f"the new data spans {n_times} steps of {freq} (from {_clock_time(start, clock)} to "
            f"{_clock_time(hi, clock)}) but has only about {n_stamps} distinct timestamps, and every context would "
            f"be scored on all those steps; the latest row, at {_clock_time(hi, clock)} for context "
            f"{tuple(latest) if len(keys) > 1 else latest[0]!r}, may have a wrong clock: leave such rows out "
            "(or score a long sparse span in parts)"
        )
    grid = {"start": start, "step": step, "n_times": n_times, "freq": freq, "name": time,
            "history_end": end_ns, **clock}
    if zone is not None:
        _check_zoned_grid(grid)
    spark = sdf.sparkSession
    payload = json.dumps(global_state)
    shipped = _broadcast(spark, payload)
    cls = _detector_class(global_state["class"])
    n_fitted = int(global_state.get("fit", {}).get("n_contexts", 0))
    shards = _n_shards(spark, n_fitted, contexts_per_shard, n_shards)
    new_keyed = prepared.withColumn("_shard", _shard_key(keys, shards))
    state_keyed = state.withColumn("_shard", _shard_key(keys, shards))
    light = {"per_context": global_state["per_context"], "context": keys}
    spec = {
        "context": keys, "grid": grid, "time_codec": codec, "fill": fill, "absent": absent,
        "device": global_state["params"].get("device", "auto"),
        "model_id": hashlib.sha256(payload.encode()).hexdigest(), "global": shipped,
        "class_module": cls.__module__, "global_state_light": light,
    }
    return _Batch(global_state, names, keys, key_types, time, codec, grid, int(steps), spark, cls,
                  new_keyed, state_keyed, spec, shipped)


def score(
    sdf,
    model: SparkModel,
    *,
    context=None,
    time: str | None = None,
    value: str | None = None,
    fill: str | None = None,
    n_shards: int | None = None,
    contexts_per_shard: int = DEFAULT_CONTEXTS_PER_SHARD,
    absent: str = "skip",
) -> SparkScores:
    """Score new data with a :class:`SparkModel`, sharded by context.

    Parameters
    ----------
    sdf : pyspark.sql.DataFrame
        New observations in long format, on the fitted grid after the fitted
        history (as for :meth:`BaseDetector.score`); contexts unseen at fit are
        scored from a cold start, as on one machine. Fitted contexts without new
        rows are not scored (no rows in the output) unless ``absent="zero"``;
        rows with a null context column are left out, with a warning that counts
        them.
    model : SparkModel
    context, time, value, fill
        Default to those given at fit.
    absent : {"skip", "zero"}, default "skip"
        What a fitted context without a row in ``sdf`` gets, as ``tsanomaly score
        --absent`` (:func:`tsanomaly.jobs.score_frame`): not scored (``"skip"``:
        ``sdf`` may hold only some contexts), or scored as zero events over the new
        data's span (``"zero"``: ``sdf`` holds every context but omits those without
        an event, as an hourly counts table does). ``"zero"`` needs ``fill="zero"``.
    n_shards, contexts_per_shard
        As for :func:`fit` (the count of fitted contexts sizes the shards).

    Returns
    -------
    SparkScores
        ``scores`` and ``alerts`` DataFrames, read from one cached pass over the
        shards; call :meth:`SparkScores.unpersist` when both are written.

    Raises
    ------
    ValueError
        When ``fill`` is not "nan" or "zero", ``absent`` not "skip" or "zero" (or "zero" without
        ``fill="zero"``), or no row of the new data is on the fitted grid
        after the history, or a context column has another type than at fit (a wider integer
        type is taken as it is), or the new data spans more than 100 grid steps per distinct
        timestamp (and over 10,000 steps: a row with a wrong clock, which would make every
        context's panel that long). A row off the grid, or not after the history, only gives its
        context a ``reason`` (those not after the history with a warning that counts them).
    """
    b = _batch(sdf, model, context, time, value, fill, n_shards, contexts_per_shard, absent, "score")
    functions, _ = _require_pyspark()
    global_state, names, keys, key_types, codec, grid, cls = (b.global_state, b.names, b.keys, b.key_types,
                                                             b.codec, b.grid, b.cls)
    time, shipped, new_keyed, state_keyed = b.time, b.shipped, b.new_keyed, b.state_keyed
    # The class's declared types first: a model saved before the built-in detectors declared them
    # holds what a probe read (the matrix profile's times as doubles when the probe raised no alert).
    declared = dict(getattr(cls, "explanation_types", {}))
    saved = dict(global_state.get("explanations") or [])
    explanations = [[name, declared.get(name) or saved.get(name, "double")] for name in cls.explanation_columns]
    alert_types = {"_a_start": "array<int>", "_a_end": "array<int>", "_a_peak": "array<int>",
                   "_a_peak_score": "array<double>", "_a_threshold": "array<double>"}
    alert_types.update({f"_a_x{k}": "array<bigint>" if kind == "timestamp" else f"array<{kind}>"
                        for k, (_, kind) in enumerate(explanations)})
    spec = dict(
        b.spec, explanations=explanations, alert_columns=list(alert_types),
        columns=keys + ["reason", "scores"] + list(alert_types),
        object_columns=_object_columns({**key_types, "reason": "string", "scores": "array<double>", **alert_types}),
    )
    context_fields = [_ddl(k, t) for k, t in key_types.items()]
    schema = ", ".join(context_fields + [_ddl("reason", "string"), _ddl("scores", "array<double>")]
                       + [_ddl(c, t) for c, t in alert_types.items()])
    combined = (new_keyed.groupBy("_shard").cogroup(state_keyed.groupBy("_shard"))
                .applyInPandas(lambda new, rows: _score_shard(new, rows, spec), schema).persist())
    named = [_col(k).alias(n) for k, n in zip(keys, names)]  # the user's names again
    exploded = combined.select(*named, "reason", functions.posexplode("scores").alias("_pos", "score"))
    scores = exploded.select(*_cols(names), _time_at(functions.col("_pos"), grid, codec).alias(time), "score",
                             "reason")
    detector_name = global_state["class"].rsplit(".", 1)[-1]
    alert = functions.explode(functions.arrays_zip(*[functions.col(c) for c in alert_types])).alias("_a")
    a = functions.col
    alerts = combined.select(*named, alert).select(
        *_cols(names),
        _time_at(a("_a._a_start"), grid, codec).alias("start"),
        _time_at(a("_a._a_end"), grid, codec).alias("end"),
        _time_at(a("_a._a_peak"), grid, codec).alias("peak_time"),
        a("_a._a_peak_score").alias("peak_score"),
        (a("_a._a_end") - a("_a._a_start") + 1).cast("long").alias("n_points"),
        a("_a._a_threshold").alias("threshold"),
        functions.lit(detector_name).alias("detector"),
        *[_explanation_column(a(f"_a._a_x{k}"), kind, codec).alias(name)
          for k, (name, kind) in enumerate(explanations)],
    )
    return SparkScores(scores, alerts, [combined, shipped])


def _warn_failed_updates(rolled, keys: list[str], new_global: dict) -> None:
    """Warn, naming a few, of the contexts :func:`_update_shard` marked because the detector raised
    on them, and count them in ``new_global["fit"]["n_failed"]`` (the contexts with a reason)."""
    functions, _ = _require_pyspark()
    failed = rolled.where(functions.col("_update_failed"))
    n_failed = failed.count()
    if not n_failed:
        return
    if "fit" in new_global:
        new_global["fit"]["n_failed"] = int(new_global["fit"].get("n_failed", 0)) + n_failed
    examples = "; ".join(f"{tuple(row[:-1]) if len(keys) > 1 else row[0]!r}: {row['reason']}"
                         for row in failed.select(*keys, "reason").limit(3).collect())
    warnings.warn(
        f"tsanomaly.spark.update: the detector raised on {n_failed} context(s), which keep their state from "
        f"before the batch and a reason (SparkModel.failed() lists them; score gives them none until a new "
        f"fit), e.g. {examples}", UserWarning, stacklevel=3)


def update(
    sdf,
    model: SparkModel,
    *,
    context=None,
    time: str | None = None,
    value: str | None = None,
    fill: str | None = None,
    absent: str = "skip",
    n_shards: int | None = None,
    contexts_per_shard: int = DEFAULT_CONTEXTS_PER_SHARD,
) -> SparkModel:
    """Roll a :class:`SparkModel` forward over new data without refitting (:meth:`BaseDetector.update`).

    A job that scores batch after batch calls ``scores = score(batch, model)`` then
    ``model = update(batch, model)``: the next batch then scores, context by context, as
    ``det.update(batch); det.score(next)`` does on one machine. The per-context state that
    each detector's ``_update`` moves (history tails; STL's level, slope and recent values;
    the matrix profile's past) advances over the batch; scales, models and thresholds stay,
    and ``fit_end_`` and ``n_fit_times_`` move to the batch's last grid point.

    Parameters
    ----------
    sdf : pyspark.sql.DataFrame
        New observations in long format, on the fitted grid after the history (as for
        :func:`score`; the same batch that was scored). A fitted context without a row
        moves on as missing (unless ``absent="zero"``); a context unseen at fit stays unseen
        (it has no state to move). A row off the grid, or not after the history, or a
        duplicate or infinite value, marks its context, which then moves on as missing over
        the batch (:func:`score` gives it that row's reason). Rows with a null context
        column are left out, with a warning that counts them.
    model : SparkModel
        A fitted model. Contexts that failed at fit, or in an earlier update (a non-null ``reason``),
        pass through unchanged.
    context, time, value, fill
        Default to those given at fit.
    absent : {"skip", "zero"}, default "skip"
        As for :func:`score`: with ``"zero"`` (which needs ``fill="zero"``), a fitted context
        without a row moves on as zero events over the batch.
    n_shards, contexts_per_shard
        As for :func:`fit`.

    Returns
    -------
    SparkModel
        The model after the batch, its per-context state persisted (as :func:`fit`'s). It
        saves and loads as a fitted one. The old model is left as it was: call its
        :meth:`SparkModel.unpersist` once the new one is in use (after its state was written,
        say), as the new state is computed from the old.

    Raises
    ------
    NotImplementedError
        When the detector cannot update (its class has no ``_update``, or its settings have
        none), before any Spark work.
    ValueError
        As :func:`score`: a bad ``fill`` or ``absent``, no row on the fitted grid after the
        history, a context column of another type, or a span too long for its timestamps.

    Warns
    -----
    HistoryGapWarning
        When the batch does not start at the step after the history: the steps in between
        are missing, as on one machine.
    UserWarning
        When the detector raised on some contexts (naming a few): as :func:`score` isolates
        them, the others move on while these keep their state from before the batch, with
        ``reason`` "update over <first> to <last> failed: <exception> ..."; they are listed by
        :meth:`SparkModel.failed`, given null scores by later calls of :func:`score` (with the
        ``reason`` "not fitted: " followed by that one) and passed through by later updates, until
        a new fit.
    """
    global_state = model.global_state
    # Whether the detector can update at all depends on its class and settings only: asked of the
    # template, before any Spark work (an ensemble is refused by Spark earlier, at fit).
    why = _template(global_state, device="cpu")._why_no_update()
    if why is not None:
        raise NotImplementedError(f"{why}; fit again on a recent history instead (tsanomaly.spark.fit)")
    b = _batch(sdf, model, context, time, value, fill, n_shards, contexts_per_shard, absent, "update")
    functions, _ = _require_pyspark()
    keys, names = b.keys, b.names
    fitted_names = list(global_state["context"])
    # The state's own columns, order and types, under the shards' names for the context columns.
    types = {f.name: f.dataType.simpleString() for f in model.state.schema.fields}
    columns = keys + [c for c in model.state.columns if c not in fitted_names]
    out_types = {**{k: types[n] for k, n in zip(keys, fitted_names)},
                 **{c: types[c] for c in columns[len(keys):]}, "_specs": "string", "_update_failed": "boolean"}
    spec = dict(
        b.spec, columns=list(out_types),
        int_columns=[c for c, t in out_types.items() if t == "bigint"],
        bool_columns=[c for c, t in out_types.items() if t == "boolean"],
        object_columns=_object_columns(out_types),
    )
    schema = ", ".join(_ddl(c, t) for c, t in out_types.items())
    rolled = (b.new_keyed.groupBy("_shard").cogroup(b.state_keyed.groupBy("_shard"))
              .applyInPandas(lambda new, rows: _update_shard(new, rows, spec), schema).persist())
    # A history fitted shorter than the look-back grows over updates (with_updated_history): its
    # trailing shape in the layout follows what the shards kept, which is one shape for all.
    found = [row["_specs"] for row in rolled.where(functions.col("_specs").isNotNull())
             .select("_specs").distinct().collect()]
    if len(found) > 1:
        rolled.unpersist()
        raise RuntimeError(f"{global_state['class']} kept per-context state of different shapes in different "
                           f"shards after the update ({found[:2]}); fit again on a recent history instead")
    new_global = copy.deepcopy(global_state)
    if found:
        # By column, in the model's order: a hook that assigns a new dict puts it last in vars().
        specs = {item["column"]: item for item in json.loads(found[0])}
        old = {item["column"]: item["spark_type"] for item in global_state["per_context"]}
        if {c: item["spark_type"] for c, item in specs.items()} != old:
            rolled.unpersist()
            raise RuntimeError(f"{global_state['class']} changed its per-context columns in an update "
                               f"({old} -> {[(c, item['spark_type']) for c, item in specs.items()]})")
        new_global["per_context"] = [specs[item["column"]] for item in global_state["per_context"]]
    _warn_failed_updates(rolled, keys, new_global)
    # fit_end_ and n_fit_times_ as BaseDetector.update moves them: the batch's last grid point (UTC,
    # no zone, as the shards' grids and _shipped_fit_end hold it, but for a zoned grid of days or
    # weeks), and every step since the fit's start.
    grid = b.grid
    last = _grid_index(grid)[-1]  # on a zoned grid, in its zone with the offset, as one machine writes it
    n_fit_times = int(_global_attribute(global_state, "n_fit_times_")) + b.steps - 1 + grid["n_times"]
    _encode_state("fit_end_", last.isoformat(), new_global["state"], {})
    _encode_state("n_fit_times_", n_fit_times, new_global["state"], {})
    state = rolled.select(*[_col(k).alias(n) for k, n in zip(keys, fitted_names)],
                          *_cols(columns[len(keys):]))
    return SparkModel(new_global, state, [rolled, b.shipped])
