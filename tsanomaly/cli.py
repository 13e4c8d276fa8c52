"""Command line: ``tsanomaly demo | fit | score | report | evaluate``.

Each sub-command lives in its own ``_cmd_*`` function and registers its
arguments in ``_build_parser``. User errors (bad arguments, unreadable or
malformed input) exit with status 2 and a one-line reason, never a traceback.
``evaluate`` exits with status 1 when its report is complete but lists a file that
could not be read or a detector that failed on a file.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

__all__ = ["main"]

log = logging.getLogger("tsanomaly")


class UserError(Exception):
    """An error in the user's arguments or input: reported in one line, exit status 2."""


def _cmd_demo(args) -> int:
    from tsanomaly.demo import SCORED_DAYS, print_demo, run_demo

    # Fewer days leave no history to fit on: the demo would score an empty week and print
    # "precision nan" with exit status 0.
    if args.days < SCORED_DAYS + 1:
        raise UserError(
            f"--days must be at least {SCORED_DAYS + 1} (the last {SCORED_DAYS} days are scored "
            f"after at least one day of history), got {args.days}"
        )
    if args.top < 0:
        raise UserError(f"--top must be 0 or more, got {args.top}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {args.seed}")
    # A history shorter than the detector needs for a finite training score calibrates an
    # infinite threshold: no alert, "precision nan", exit status 0 (the baseline needs a week).
    from tsanomaly.detectors import make_detector

    need = make_detector(args.detector).min_fit_times()
    history_hours = (args.days - SCORED_DAYS) * 24
    if need is not None and history_hours < need:
        need_days = -(-need // 24)
        raise UserError(
            f"--days must be at least {SCORED_DAYS + need_days} for --detector {args.detector}: it needs "
            f"{need} hours of history before the {SCORED_DAYS} scored days, and --days {args.days} leaves "
            f"{history_hours}"
        )
    result = _job_errors(
        lambda: run_demo(
            detector=args.detector,
            n_contexts=args.contexts,
            n_days=args.days,
            history_days=args.days - SCORED_DAYS,
            device=args.device,
            seed=args.seed,
        )
    )
    print_demo(result, top=args.top)
    return 0


def _job_errors(run):
    """Call ``run()``, turning the user errors that main() does not map into UserError.

    A missing GPU (``--device cuda`` on a CPU machine), a permission error, or
    a file that is not a zip model are the user's to fix: one line, exit 2.
    """
    import zipfile

    from tsanomaly.backend import GPUUnavailableError

    try:
        return run()
    except (GPUUnavailableError, zipfile.BadZipFile) as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise UserError(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from exc


def _cmd_fit(args) -> int:
    from tsanomaly import jobs

    params = jobs.parse_params(args.param)
    det = _job_errors(
        lambda: jobs.fit_file(
            args.input, args.save, context=args.context, time=args.time, value=args.value,
            detector=args.detector, params=params, fill=args.fill, freq=args.freq, device=args.device, tz=args.tz,
        )
    )
    print(
        f"fitted {det!r} on {jobs._count(len(det.contexts_), 'context')} x {jobs._count(det.n_fit_times_, 'time')} "
        f"(up to {jobs.local_time(det.fit_end_, args.tz)}); saved to {args.save}"
    )
    return 0


def _cmd_score(args) -> int:
    from tsanomaly import jobs

    result = _job_errors(
        lambda: jobs.score_file(
            args.model, args.input, args.output, scores=args.scores, unseen=args.unseen,
            chunk_size=args.chunk_size, device=args.device, update=args.update, absent=args.absent, tz=args.tz,
        )
    )
    updated = (f"; model updated through {jobs.local_time(result.detector.fit_end_, result.columns.tz)} and saved to "
               f"{args.update}" if args.update is not None else "")
    print(result.summary() + f"; alerts written to {args.output}" + updated)
    return 0


def _cmd_report(args) -> int:
    from tsanomaly import jobs

    results = _job_errors(
        lambda: jobs.report_file(
            args.model, args.input, args.out, top=args.top, history=args.history, title=args.title,
            device=args.device, absent=args.absent, tz=args.tz,
        )
    )
    n_alerts = sum(len(r.alerts) for r in results)
    plotted = sum(r.extra["plotted"] for r in results)
    print(f"report with {plotted} plotted of {n_alerts} alerts written to {args.out}")
    return 0


def _add_job_commands(commands) -> None:
    """Register ``fit``, ``score`` and ``report`` (the scoring-job commands, see tsanomaly.jobs)."""
    from tsanomaly.io import FORMATS
    from tsanomaly.jobs import DEFAULT_CHUNK_SIZE

    # --verbose is accepted after the sub-command too; SUPPRESS keeps the main flag's value otherwise.
    verbose = {"action": "store_true", "default": argparse.SUPPRESS, "help": "log progress to stderr"}
    # Every extension the reader takes (io.FORMATS), grouped by format: the help listed three of seven.
    extensions = sorted(FORMATS, key=lambda ext: (FORMATS[ext], len(ext)))
    formats = f"CSV, Parquet or JSON lines, by extension ({', '.join(extensions)})"
    tz_help = ("time zone of the input's times; default and only zone allowed: the model's, from `fit --tz` "
               "(a model fitted without --tz refuses any but UTC)")

    fit = commands.add_parser(
        "fit", help="fit a detector on history in a file and save the model",
        description=f"Fit a detector on a long table ({formats}) and save it; the model remembers the columns.",
    )
    fit.add_argument("--input", required=True, help=f"history: one row per context and time bucket; {formats}")
    fit.add_argument("--context", required=True, help="context column(s), comma-separated, e.g. country,asn")
    fit.add_argument("--time", required=True, help="timestamp column")
    fit.add_argument("--value", required=True, help="numeric value column, e.g. failed_logins")
    fit.add_argument("--detector", default="stl", help="baseline | stl | mp | lstm | ensemble (default: stl)")
    fit.add_argument("--save", required=True, help="model file to write, e.g. model.tsa")
    fit.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="detector parameter, repeatable; values are JSON (24, true, null, [24,168]) or text",
    )
    fit.add_argument(
        "--fill", default="zero", choices=["zero", "nan"],
        help="an absent (context, time) row means zero events (counts, default) or a missing value",
    )
    fit.add_argument(
        "--freq", default=None,
        help="grid step such as 1h, 15min, 7D, or W / W-MON (weeks on that weekday) (default: inferred)",
    )
    fit.add_argument(
        "--tz", default=None, metavar="ZONE",
        help="time zone of the time column, an IANA name such as Europe/Paris: times without a UTC offset "
             "(2026-03-29 01:00:00) are its wall clock, times with one are converted to it; days and weeks "
             "then follow its wall clock, and outputs are written in it with their offset. A time that a "
             "daylight-saving switch skips or repeats is refused (write those with their offset). The model "
             "keeps the zone for score and report (default: times as written, naive ones as UTC)",
    )
    fit.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default: the detector's")
    fit.add_argument("-v", "--verbose", **verbose)
    fit.set_defaults(handler=_cmd_fit)

    score = commands.add_parser(
        "score", help="score new data in a file with a saved model and write alerts",
        description="Score new rows with a model from `tsanomaly fit`; outputs are written atomically. "
        "With --update, the model is then rolled forward over the scored rows without refitting and saved, "
        "so that an hourly job scores each hour with the model the hour before left: fit once, then each hour "
        "`tsanomaly score --model m.tsa --input hour.csv --output alerts-HH.csv --update m.tsa`.",
    )
    score.add_argument("--model", required=True, help="model file from `tsanomaly fit`")
    score.add_argument("--input", required=True, help=f"new rows with the model's columns; {formats}")
    score.add_argument("--output", required=True, help=f"alerts table to write; {formats}")
    score.add_argument("--scores", default=None, help="also write every point's score to this file")
    score.add_argument(
        "--unseen", default=None,
        help="also write the contexts unseen at fit, each with status cold_start or skipped",
    )
    score.add_argument(
        "--update", default=None, metavar="PATH",
        help="after writing the outputs, roll the model forward over the scored input (no refit) and save it "
             "to PATH, atomically; PATH may be the --model file itself. The next batch must follow this input. "
             "Refused, before any output is written, for a model without update (e.g. an ensemble with "
             "combine=peak)",
    )
    score.add_argument(
        "--absent", default="skip", choices=["skip", "zero"],
        help="what a fitted context with no row in the input gets: skip (default: not scored, only counted; "
             "for an input that holds some contexts, e.g. a file per region) or zero (scored as zero events "
             "over the input's span, and with --update its history moves on: for a counts file that omits "
             "contexts with no event, e.g. an hourly file). zero is refused for a model fitted with --fill nan",
    )
    score.add_argument("--tz", default=None, metavar="ZONE", help=tz_help)
    score.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="contexts scored at a time")
    score.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default: the model's")
    score.add_argument("-v", "--verbose", **verbose)
    score.set_defaults(handler=_cmd_score)

    report = commands.add_parser(
        "report", help="score new data and write a self-contained HTML report with a plot per top alert",
        description="Score new rows with one or more models and write one HTML page for an analyst.",
    )
    report.add_argument(
        "--model", required=True, action="append", help="model file from `tsanomaly fit`; repeat for several"
    )
    report.add_argument("--input", required=True, help=f"new rows with the models' columns; {formats}")
    report.add_argument("--out", required=True, help="HTML file to write")
    report.add_argument(
        "--top", type=int, default=10, help="contexts plotted per model, its top alert each; at least 1 (default: 10)"
    )
    report.add_argument("--history", default=None, help="history file, drawn in grey before the scored data")
    report.add_argument("--title", default=None, help="page title")
    report.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default: the model's")
    report.add_argument(
        "--absent", default="skip", choices=["skip", "zero"],
        help="what a fitted context with no row in the input gets, as for `score --absent` (default: skip)",
    )
    report.add_argument("--tz", default=None, metavar="ZONE", help=tz_help)
    report.add_argument("-v", "--verbose", **verbose)
    report.set_defaults(handler=_cmd_report)


def _check_evaluate_out(out, data) -> None:
    """Refuse, before any work, an ``--out`` that would write into the data set or over one of its files.

    ``--out ../shared/data/README.md`` (or a data or labels file) replaced an input with the
    report, after a run of many minutes. Every file under ``--data`` belongs to the data set
    (data, labels, its README), so the report may not go anywhere inside it; a hard link
    elsewhere to one of its files is refused too. A missing output folder, or a folder given
    as the file, is found here rather than when the report is written at the end.
    """
    import os
    from pathlib import Path

    from tsanomaly.io import check_output_path

    path, root = Path(out), Path(data)
    if not str(out).strip():
        raise UserError("--out names no file; give the Markdown file to write, e.g. --out accuracy.md")
    # A folder, a missing folder or a loop of links: the checks of every output, before the data's.
    check_output_path(out, "--out", what="the Markdown file to write")
    target = path.resolve()  # a symbolic link is written through (see tsanomaly.io), so its target counts
    if root.is_dir() and target.is_relative_to(root.resolve()):
        raise UserError(
            f"--out {out} lies inside the data folder --data {data}, whose files are the inputs "
            f"(data, labels, README); write the report outside it"
        )
    # Another name of the same file (a hard link) can only exist when the file has several links.
    if root.is_dir() and target.exists() and target.stat().st_nlink > 1:
        for folder, _, names in os.walk(root):
            for name in names:
                try:
                    same = os.path.samefile(os.path.join(folder, name), target)
                except OSError:
                    continue
                if same:
                    raise UserError(
                        f"--out {out} is the same file (a hard link) as {os.path.join(folder, name)} of the "
                        f"data set: writing the report would replace that input; name another file"
                    )


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from tsanomaly.datasets import read_nab, read_ucr
    from tsanomaly.evaluation import BENCHMARK_DETECTORS, evaluate, format_markdown

    readers = {"nab": read_nab, "ucr": read_ucr}
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in detectors if d not in BENCHMARK_DETECTORS]
    if unknown or not detectors:
        raise UserError(
            f"--detectors: unknown or no detector name(s) {unknown or args.detectors!r}; "
            f"valid names: {', '.join(BENCHMARK_DETECTORS)}"
        )
    twice = sorted({d for d in detectors if detectors.count(d) > 1})
    if twice:
        # It was run twice and counted twice: the summary said twice the number of files.
        raise UserError(f"--detectors names {', '.join(twice)} more than once; name each detector once")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in readers]
    # Checked here: the loop below skips names it has no reader for, which would print an
    # empty report with exit status 0.
    if unknown:
        raise UserError(f"unknown data set(s) {', '.join(unknown)} in --datasets; valid names: {', '.join(readers)}")
    if not datasets:
        raise UserError(f"--datasets names no data set; valid names: {', '.join(readers)}")
    if args.max_points < 1:
        raise UserError(f"--max-points must be at least 1, got {args.max_points}")
    if args.out is not None:
        _check_evaluate_out(args.out, args.data)

    def read():
        # Every data set is found and read before any detector runs: a missing ucr/ folder or a
        # malformed labels file used to end the run after the minutes NAB had taken.
        folders = {dataset: Path(args.data) / dataset for dataset in readers if dataset in datasets}
        for folder in folders.values():
            if not folder.is_dir():
                raise UserError(f"data folder {folder} not found (expected {args.data}/nab and {args.data}/ucr)")
        loaded = {}
        for dataset, folder in folders.items():
            unreadable = []
            # NAB's detectors see each file's records in order (its traffic files have jittered,
            # gappy timestamps that would leave a time grid mostly empty), and NAB scores records.
            kwargs = {"grid": "rows"} if dataset == "nab" else {}
            def on_error(name, exc, unreadable=unreadable):
                # A file that cannot be read is reported, with why, and the others are scored. The
                # readers' own errors name the file and the fix; anything else keeps its type.
                ours = isinstance(exc, (ValueError, OSError))
                unreadable.append((name, str(exc) if ours else f"{type(exc).__name__}: {exc}"))

            records = readers[dataset](folder, limit=args.limit, on_error=on_error, **kwargs)
            if not records and unreadable:
                raise UserError(
                    f"none of the {len(unreadable)} file(s) in {folder} could be read; the first: {unreadable[0][1]}"
                )
            if not records:  # the readers refuse an empty data set; this is the last line of defence
                raise UserError(f"no labelled series in {folder}")
            loaded[dataset] = records, unreadable
        return loaded

    def run(loaded):
        return [
            evaluate(records, dataset, detectors, max_points=args.max_points, device=args.device, unreadable=unreadable)
            for dataset, (records, unreadable) in loaded.items()
        ]

    loaded = _job_errors(read)
    evaluations = _job_errors(lambda: run(loaded))
    text = format_markdown(evaluations, "tsanomaly evaluate " + " ".join(args.command_line))
    print(text)
    if args.out:
        from tsanomaly.io import write_text

        write_text(text, args.out)
    failed = sum(int(ev.summary["failed"].sum()) for ev in evaluations)
    unreadable = sum(len(ev.unreadable) for ev in evaluations)
    if failed or unreadable:
        # The report is complete, but not every file was scored by every detector: exit status 1.
        print(
            f"tsanomaly evaluate: {unreadable} file(s) could not be read and {failed} (detector, file) run(s) "
            "failed; the report lists them under its tables",
            file=sys.stderr,
        )
        return 1
    return 0


def _add_evaluate_command(commands) -> None:
    """Register ``evaluate``: detectors on the NAB and UCR labelled sets (see tsanomaly.evaluation)."""
    evaluate = commands.add_parser(
        "evaluate", help="accuracy of the detectors on labelled NAB and UCR data",
        description="Fit each detector on each file's training part, score the rest, print the metrics per data set. "
        "A file that cannot be read, or a detector that fails on a file, is listed under the table (the "
        "detector's run counted as giving no score) and the exit status is 1.",
    )
    evaluate.add_argument("--data", required=True, help="folder holding nab/ and ucr/ (e.g. ../shared/data)")
    evaluate.add_argument("--datasets", default="nab,ucr", help="comma-separated: nab, ucr (default: both)")
    evaluate.add_argument("--detectors", default="baseline,stl,mp,lstm,ensemble", help="comma-separated short names")
    evaluate.add_argument("--limit", type=int, default=None, help="first N files of each data set")
    evaluate.add_argument("--max-points", type=int, default=50_000, help="longer series are block-averaged")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument(
        "--out", default=None, help="also write the Markdown table to this file (outside --data: its files are the inputs)"
    )
    evaluate.set_defaults(handler=_cmd_evaluate)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsanomaly", description="GPU-accelerated anomaly detection for per-context security time series."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="score a synthetic security panel with injected attacks")
    demo.add_argument("--detector", default="stl", help="baseline | stl | mp | lstm | ensemble (default: stl)")
    demo.add_argument("--contexts", type=int, default=200, help="number of (country, ASN) contexts")
    demo.add_argument(
        "--days", type=int, default=28,
        help="days of hourly data; the last week is scored and the days before it fit the detector, so at least "
             "9 for stl and ensemble, 10 for lstm, 15 for baseline and mp (default: 28)",
    )
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--top", type=int, default=15, help="alerts to print")
    demo.set_defaults(handler=_cmd_demo)
    _add_job_commands(commands)
    _add_evaluate_command(commands)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``tsanomaly`` console script; returns the exit status."""
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    # What followed the sub-command, for reports that quote their command. Only flags without a
    # value (-v) can come before it, so its first occurrence is the sub-command itself.
    args.command_line = argv[argv.index(args.command) + 1 :]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s"
    )
    # A warning reads like the errors below, one line, without Python's source file and line
    # (which meant nothing to the user of a command: "base.py:286: UserWarning: ...").
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_, **__: (
        f"tsanomaly {args.command}: warning: {str(message).strip().splitlines()[0] if str(message).strip() else ''} "
        f"({category.__name__})\n")
    try:
        return int(args.handler(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyError, ImportError) as exc:
        if args.verbose:
            log.exception("failed")
        from tsanomaly.io import _first_line  # the first line that says something (matplotlib's start with a newline)

        print(f"tsanomaly {args.command}: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
