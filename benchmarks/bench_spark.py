"""ASV throughput of ``tsanomaly.spark.score`` in local mode against single-process scoring (contexts/s).

Shows what the Spark path costs on top of the detector: the same baseline model
scores the same week of hourly failed logins (a) on one process from a Panel,
(b) on one process from the long frame a job reads (``Panel.from_frame`` +
``score`` + ``alerts``), and (c) with ``tsanomaly.spark.score`` in Spark local
mode, materialising both the scores and the alerts (Spark's ``noop`` sink: all
the work of a write, no files).

Run the figures once, outside ASV::

    python benchmarks/bench_spark.py --contexts 20000 --master "local[2]"
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import best_time  # noqa: E402

CONTEXT = ["country", "asn"]
METRIC = "failed_logins"


def _session(master: str = "local[2]"):
    """A local SparkSession (raises NotImplementedError, ASV's skip, when PySpark is absent)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise NotImplementedError(f'pyspark is not installed: pip install "tsanomaly[spark]" ({exc})') from exc
    warnings.filterwarnings("ignore", message=".*pandas >= 3.0.0.*")
    cores = int(master[6:-1]) if master.startswith("local[") and master[6:-1].isdigit() else 2
    session = (
        SparkSession.builder.master(master)
        .appName("tsanomaly-bench-spark")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(4 * cores))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "4g")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


class _Case:
    """Three weeks of history fitted on one machine, one new week to score, on one machine and on Spark."""

    def __init__(self, n_contexts: int, master: str = "local[2]"):
        import tsanomaly.spark as tss
        from tsanomaly import Panel, RollingZScoreDetector
        from tsanomaly.datasets import make_security_panel

        self.n_contexts = n_contexts
        self.spark = _session(master)
        data = make_security_panel(n_contexts=n_contexts, n_days=28, seed=0)
        history, new = data.split("2024-01-22")
        self.new_frame = new.panels[METRIC].to_frame(value=METRIC, time="ts")
        self.new_panel = Panel.from_frame(self.new_frame, CONTEXT, "ts", METRIC)
        self.detector = RollingZScoreDetector(device="cpu").fit(history.panels[METRIC])
        self.model = tss.from_detector(self.spark, self.detector, time="ts", value=METRIC)
        self.model.state = self.model.state.cache()
        self.new_sdf = self.spark.createDataFrame(self.new_frame).cache()
        self.model.state.count(), self.new_sdf.count()  # both in memory before timing

    def single_process(self):
        scores = self.detector.score(self.new_panel)
        self.detector.alerts(self.new_panel, scores=scores)

    def single_process_from_frame(self):
        from tsanomaly import Panel

        panel = Panel.from_frame(self.new_frame, CONTEXT, "ts", METRIC)
        self.detector.alerts(panel, scores=self.detector.score(panel))

    def spark_score(self):
        import tsanomaly.spark as tss

        result = tss.score(self.new_sdf, self.model)
        result.scores.write.format("noop").mode("overwrite").save()
        result.alerts.write.format("noop").mode("overwrite").save()
        result.unpersist()

    def contexts_per_second(self, name: str, repeat: int = 3) -> float:
        return self.n_contexts / best_time(getattr(self, name), "cpu", repeat=repeat, warmup=1)

    def close(self):
        self.spark.stop()


class SparkScoreThroughput:
    """Contexts scored per second (scores and alerts), one process against Spark local[2]."""

    params = ([2_000, 20_000],)
    param_names = ["n_contexts"]
    unit = "contexts/s"
    timeout = 1800

    def setup(self, n_contexts):
        self.case = _Case(n_contexts)

    def teardown(self, n_contexts):
        self.case.close()

    def track_single_process_contexts_per_second(self, n_contexts):
        return self.case.contexts_per_second("single_process")

    def track_single_process_from_frame_contexts_per_second(self, n_contexts):
        return self.case.contexts_per_second("single_process_from_frame")

    def track_spark_local_contexts_per_second(self, n_contexts):
        return self.case.contexts_per_second("spark_score")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="tsanomaly.spark.score against single-process score")
    parser.add_argument("--contexts", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    case = _Case(args.contexts, args.master)
    try:
        single = case.contexts_per_second("single_process", args.repeat)
        from_frame = case.contexts_per_second("single_process_from_frame", args.repeat)
        spark = case.contexts_per_second("spark_score", args.repeat)
    finally:
        case.close()
    print(f"{args.contexts} contexts x 168 hourly points, RollingZScoreDetector, scores + alerts, "
          f"best of {args.repeat}")
    print(f"  single process, from a Panel:       {single:12,.0f} contexts/s")
    print(f"  single process, from a long frame:  {from_frame:12,.0f} contexts/s")
    print(f"  tsanomaly.spark.score, {args.master}: {spark:12,.0f} contexts/s "
          f"({spark / from_frame:.2f}x the long-frame single process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
