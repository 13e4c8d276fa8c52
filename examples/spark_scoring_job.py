"""A Spark scoring job: fit on three weeks of history, score the next week, write Parquet.

What it shows
-------------
The shape of a nightly job on a cluster that already keeps its counts in Spark
tables: hourly failed logins per (country, ASN) — 100,000 contexts by default —
read from Parquet, fitted with :func:`tsanomaly.spark.fit` (contexts sharded
across tasks, the global alert threshold combined exactly from every shard), the
model saved (global state as one JSON line, per-context state as Parquet) and
read back, then the new week scored with :func:`tsanomaly.spark.score`, which
writes one row per (context, hour) with its score, and the alerts in the columns
of ``Detector.alerts``.

The input is synthetic (:func:`tsanomaly.datasets.make_security_panel`, generated
in blocks of 10,000 contexts and written as Parquet once, then reused); attacks
are injected after day 21, so the alert table can be checked against them.

Run it
------
::

    pip install -e ".[spark]"                          # PySpark 4.x; needs Java 17+
    python examples/spark_scoring_job.py                 # 100,000 contexts, local[*]
    python examples/spark_scoring_job.py --contexts 2000 # a minute on a laptop
    python examples/spark_scoring_job.py --detector mp --master local[8] --out /tmp/tsa-job

On a cluster, submit it with ``spark-submit`` and ``--master yarn`` (or k8s) and an
``--out`` on shared storage; for GPU executors see the settings in ``tsanomaly.spark``.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

BLOCK = 10_000
CONTEXT = ["country", "asn"]
METRIC = "failed_logins"


def write_input(out: Path, n_contexts: int, days: int, history_days: int, seed: int) -> Path:
    """Write history/ and new/ Parquet folders of long rows (country, asn, ts, failed_logins); returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tsanomaly.datasets import make_security_panel

    # Every argument that changes the data is in the name: a rerun with another split must not
    # reuse the folder written for this one.
    folder = out / f"input-{n_contexts}-{days}d-history{history_days}d-seed{seed}"
    if (folder / "_DONE").exists():
        return folder
    attacks = []
    for block, first in enumerate(range(0, n_contexts, BLOCK)):
        n = min(BLOCK, n_contexts - first)
        data = make_security_panel(n_contexts=n, n_days=days, seed=seed + block, clean_days=history_days)
        history, new = data.split(data.index[0] + np.timedelta64(history_days, "D"))
        for name, part in (("history", history), ("new", new)):
            frame = part.panels[METRIC].to_frame(value=METRIC, time="ts")
            frame["asn"] = frame["asn"] + f"-{block}"  # ASN labels are unique within a block only
            (folder / name).mkdir(parents=True, exist_ok=True)
            # Microsecond timestamps: Spark reads Parquet TIMESTAMP(MICROS), not NANOS.
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table, folder / name / f"part-{block:04d}.parquet", coerce_timestamps="us")
        table = data.attacks.assign(asn=data.attacks["asn"] + f"-{block}")
        attacks.append(table[table["metrics"].str.contains(METRIC)])
    import pandas as pd

    pd.concat(attacks, ignore_index=True).to_csv(folder / "attacks.csv", index=False)
    (folder / "_DONE").touch()
    return folder


def attacks_found(attacks, alerts):
    """The attacks (one row each) with an alert on their context whose span overlaps theirs.

    Both tables hold the context columns and inclusive ``start``/``end``; times are compared in
    UTC (Spark hands back zoned or naive UTC timestamps, the attack table is naive UTC).
    """
    import pandas as pd

    def naive_utc(column):
        column = pd.to_datetime(column)
        return column.dt.tz_convert("UTC").dt.tz_localize(None) if column.dt.tz is not None else column

    attacks = attacks.reset_index(drop=True)
    attacks = attacks.assign(attack_row=np.arange(len(attacks)),
                             start=naive_utc(attacks["start"]), end=naive_utc(attacks["end"]))
    alerts = alerts[CONTEXT + ["start", "end"]].assign(start=naive_utc(alerts["start"]), end=naive_utc(alerts["end"]))
    pairs = attacks.merge(alerts, on=CONTEXT, suffixes=("", "_alert"))
    overlap = (pairs["start_alert"] <= pairs["end"]) & (pairs["end_alert"] >= pairs["start"])
    return attacks.drop(columns="attack_row")[attacks["attack_row"].isin(pairs.loc[overlap, "attack_row"])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, default=100_000, help="number of (country, ASN) contexts")
    parser.add_argument("--days", type=int, default=28, help="days of data in all")
    parser.add_argument("--history-days", type=int, default=21, help="days fitted on; the rest is scored")
    parser.add_argument("--detector", default="baseline", help="short name: baseline, stl, mp")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--out", default="spark-job-out", help="folder for the input, model, scores and alerts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.contexts < 1:
        parser.error("--contexts must be positive")
    if not 1 <= args.history_days < args.days:
        parser.error(f"--history-days must be from 1 to --days - 1 ({args.days - 1}): the rest is scored")

    warnings.filterwarnings("ignore", message=".*pandas >= 3.0.0.*")  # PySpark 4.3 on pandas 3: works, warns
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import tsanomaly.spark as tss
    from tsanomaly.detectors import make_detector

    out = Path(args.out)
    started = time.perf_counter()
    folder = write_input(out, args.contexts, args.days, args.history_days, args.seed)
    print(f"input: {folder} ({time.perf_counter() - started:.1f} s)")

    spark = (
        SparkSession.builder.master(args.master)
        .appName("tsanomaly-spark-scoring-job")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.driver.memory", "4g")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    cores = spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(max(4, 4 * cores)))

    history = spark.read.parquet(str(folder / "history"))
    new = spark.read.parquet(str(folder / "new"))
    detector = make_detector(args.detector, device="auto")

    t0 = time.perf_counter()
    model = tss.fit(history, detector, context=CONTEXT, time="ts", value=METRIC)
    model_path = str(out / f"model-{args.detector}")
    model.save(model_path, mode="overwrite")
    fit_seconds = time.perf_counter() - t0
    print(f"fit:   {model} in {fit_seconds:.1f} s ({args.contexts / fit_seconds:,.0f} contexts/s), "
          f"saved to {model_path}")
    model.unpersist()

    model = tss.load_model(spark, model_path)
    t0 = time.perf_counter()
    result = tss.score(new, model)
    result.scores.write.mode("overwrite").parquet(str(out / "scores"))
    result.alerts.write.mode("overwrite").parquet(str(out / "alerts"))
    score_seconds = time.perf_counter() - t0
    result.unpersist()
    print(f"score: {score_seconds:.1f} s ({args.contexts / score_seconds:,.0f} contexts/s), "
          f"scores and alerts written to {out / 'scores'} and {out / 'alerts'}")

    alerts = spark.read.parquet(str(out / "alerts"))
    scores = spark.read.parquet(str(out / "scores"))
    unscored = scores.where(F.col("reason").isNotNull()).select(*CONTEXT).distinct().count()
    print(f"{alerts.count()} alerts; {unscored} contexts not scored (see their reason column)")
    top = alerts.orderBy(F.desc("peak_score")).limit(10).toPandas()
    print(top[CONTEXT + ["start", "end", "peak_score", "n_points"]].to_string(index=False))

    import pandas as pd

    attacks = pd.read_csv(folder / "attacks.csv", parse_dates=["start", "end"])
    # Found: an alert on the attacked context whose span overlaps the attack's (an alert on
    # that context at another time of the scored week does not count).
    found = attacks_found(attacks, alerts.select(*CONTEXT, "start", "end").toPandas())
    print(f"attacks with an alert during them: {len(found)} of {len(attacks)}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
