"""The HTML report: summary numbers, one plot per top alert, self-contained, escaped, MP neighbours."""
from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

import tsanomaly
from tsanomaly import io as tsio
from tsanomaly import jobs, report
from tsanomaly.cli import main
from tsanomaly.detectors import RollingZScoreDetector

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(n_ctx=6, days=12, bursts=((1, -30, 3, 500), (3, -10, 1, 300), (4, -40, 2, 250)), seed=1, label=None):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-04-01", periods=24 * days, freq="1h")
    hours = np.arange(len(index)) % 24
    values = rng.poisson(rng.uniform(10, 60, (n_ctx, 1)) * (1 + 0.5 * np.sin(2 * np.pi * hours / 24))).astype(float)
    for row, start, length, size in bursts:
        values[row, start : start + length] += size
    asns = [f"AS{k}" for k in range(n_ctx)]
    if label is not None:
        asns[1] = label
    return pd.DataFrame({"asn": np.repeat(asns, len(index)), "ts": np.tile(index, n_ctx), "logins": values.reshape(-1)})


def _split(frame, days_new=2):
    cut = frame["ts"].max() - pd.Timedelta(hours=24 * days_new)
    return frame[frame["ts"] <= cut], frame[frame["ts"] > cut]


def _model(tmp_path, history, name="m.tsa", **params):
    det = jobs.fit_frame(history, "asn", "ts", "logins", detector="baseline", params={"window": 4, **params})
    det.save(tmp_path / name)
    return tmp_path / name


def _images(page):
    return re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def _number(page, element_id):
    return int(re.search(rf'id="{element_id}">(\d+)<', page).group(1))


def test_report_has_one_plot_per_top_alert_and_the_summary_numbers(tmp_path, capsys):
    history, today = _split(_frame())
    model = _model(tmp_path, history)
    today_path = tsio.write_table(today, tmp_path / "today.parquet")
    out = tmp_path / "report.html"
    assert main(["report", "--model", str(model), "--input", str(today_path), "--out", str(out), "--top", "10"]) == 0
    page = out.read_text()
    # Independent count: the same detector scored through the library API.
    det = tsanomaly.load(model)
    alerts = det.alerts(tsanomaly.Panel.from_frame(today, "asn", "ts", "logins", fill="zero"))
    contexts_with_alerts = alerts["asn"].nunique()
    assert contexts_with_alerts >= 3  # the three injected bursts
    images = _images(page)
    assert len(images) == contexts_with_alerts  # one plot per alerting context, its top alert
    assert page.count('<section class="alert"') == len(images)
    for encoded in images:
        assert base64.b64decode(encoded).startswith(PNG_MAGIC)
    assert _number(page, "total-contexts") == 6
    assert _number(page, "total-alerts") == len(alerts)
    assert f"report with {len(images)} plotted of {len(alerts)} alerts" in capsys.readouterr().out
    # The most anomalous alert is plotted first.
    first = re.search(r'<section class="alert" id="alert-1">\s*<h3>#1 (\S+) ', page).group(1)
    assert first == alerts.iloc[0]["asn"]


def test_top_limits_the_plots(tmp_path):
    history, today = _split(_frame())
    model = _model(tmp_path, history)
    out = tmp_path / "r.html"
    jobs.report_file([model], tsio.write_table(today, tmp_path / "t.csv"), out, top=2)
    assert len(_images(out.read_text())) == 2


def test_report_is_self_contained(tmp_path):
    history, today = _split(_frame())
    out = tmp_path / "r.html"
    jobs.report_file([_model(tmp_path, history)], tsio.write_table(today, tmp_path / "t.csv"), out,
                     history=tsio.write_table(history, tmp_path / "h.csv"))
    page = out.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the network
    assert "<script" not in page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_labels_from_data_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    history, today = _split(_frame(label=evil))
    out = tmp_path / "r.html"
    jobs.report_file([_model(tmp_path, history)], tsio.write_table(today, tmp_path / "t.jsonl"), out)
    page = out.read_text()
    assert evil not in page
    assert html_escaped(evil) in page


def html_escaped(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_no_alerts_gives_a_page_without_plots(tmp_path):
    history, today = _split(_frame(bursts=()))
    out = tmp_path / "r.html"
    model = _model(tmp_path, history)
    det = tsanomaly.load(model)
    det.threshold_ = np.full_like(det.threshold_, 1e9)  # nothing can alert
    det.global_threshold_ = 1e9
    det.save(model)
    jobs.report_file([model], tsio.write_table(today, tmp_path / "t.csv"), out)
    page = out.read_text()
    assert _images(page) == [] and "No alerts" in page and _number(page, "total-alerts") == 0


def test_several_models_get_a_summary_row_each(tmp_path):
    history, today = _split(_frame())
    first = _model(tmp_path, history, "a.tsa")
    second = _model(tmp_path, history, "b.tsa", seasonal_period=None)
    out = tmp_path / "r.html"
    results = jobs.report_file([first, second], tsio.write_table(today, tmp_path / "t.csv"), out, top=1)
    page = out.read_text()
    assert 'id="summary-0"' in page and 'id="summary-1"' in page
    assert len(_images(page)) == 2  # top 1 per model
    assert _number(page, "total-alerts") == sum(len(r.alerts) for r in results)


def test_expected_band_uses_the_detectors_expected_value(tmp_path):
    """Asking _explain for every point gives, at each alert's peak, the alert's own ``expected``."""
    history, today = _split(_frame())
    det = RollingZScoreDetector(window=4).fit(tsanomaly.Panel.from_frame(history, "asn", "ts", "logins"))
    new = tsanomaly.Panel.from_frame(today, "asn", "ts", "logins")
    scores = det.score(new)
    alerts = det.alerts(new, scores=scores)
    for _, alert in alerts.iterrows():
        row = new.contexts.get_loc(alert["asn"])
        expected, how = report.expected_values(det, new.take([row]), scores.to_numpy()[[row]])
        assert how == "detector's expected value"
        assert expected[new.index.get_loc(alert["peak_time"])] == pytest.approx(alert["expected"])


class _NoExplanation(RollingZScoreDetector):
    explanation_columns = ()

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        return {}


def test_detectors_without_expected_value_fall_back_to_a_rolling_median_without_earlier_days():
    history, today = _split(_frame())
    det = _NoExplanation(window=4).fit(tsanomaly.Panel.from_frame(history, "asn", "ts", "logins"))
    section = report.ReportSection.from_detector(det, tsanomaly.Panel.from_frame(today, "asn", "ts", "logins"))
    assert report.expected_values(det, section.panel.take([0]), section.scores.to_numpy()[[0]])[0] is None
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert notes["band"].startswith("rolling median of the")  # two scored days: no day has two earlier ones


def test_with_earlier_days_the_fallback_band_follows_the_daily_cycle():
    """Hourly counts with a daily cycle: the same hour of the preceding days, a band about half as wide."""
    history, today = _split(_frame())
    history_panel = tsanomaly.Panel.from_frame(history, "asn", "ts", "logins")
    det = _NoExplanation(window=4).fit(history_panel)
    section = report.ReportSection.from_detector(det, tsanomaly.Panel.from_frame(today, "asn", "ts", "logins"),
                                                 history=history_panel)
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert notes["band"].startswith("median of the same time of day in up to 7 preceding days")

    row = history_panel.to_numpy()[0]  # no burst in this context
    seasonal, how = report._fallback_expected(row, 24 * 3, pd.Timedelta("1h"))
    rolling = report._rolling_expected(row, 24 * 3, 48)
    assert how.startswith("median of the same time")
    assert report._robust_spread(row[-72:], seasonal) < 0.6 * report._robust_spread(row[-72:], rolling)


def test_a_gap_between_history_and_scored_data_keeps_the_fallback_on_the_calendar():
    values = np.arange(5.0)
    index = pd.date_range("2024-01-01", periods=5, freq="1h")
    step = pd.Timedelta("1h")
    on_time = report._history_on_the_grid(values, index, index[-1] + step, step)
    np.testing.assert_array_equal(on_time, values)
    gap = report._history_on_the_grid(values, index, index[-1] + 4 * step, step)  # 3 steps missing
    np.testing.assert_array_equal(gap, [0, 1, 2, 3, 4, np.nan, np.nan, np.nan])
    assert len(report._history_on_the_grid(values, index, index[-1] + step * 1.5, step)) == 0  # off the grid
    assert len(report._history_on_the_grid(values, index, index[-1] + 3000 * step, step)) == 0  # out of reach


def test_without_a_daily_cycle_the_fallback_keeps_the_rolling_median():
    rng = np.random.default_rng(3)
    drifting = 1000 + np.cumsum(rng.normal(0, 5, 24 * 10))  # a random walk: yesterday says little
    _, how = report._fallback_expected(drifting, 24, pd.Timedelta("1h"))
    assert how.startswith("rolling median")


@pytest.mark.parametrize("step, period", [("1h", 24), ("5min", 288), ("1D", 7), ("7min", 0), ("2D", 0), (None, 0)])
def test_the_fallback_cycle_is_the_calendar_day_or_week(step, period):
    assert report._calendar_period(None if step is None else pd.Timedelta(step)) == period


def test_an_ensemble_band_uses_its_first_member_with_an_expected_value():
    from tsanomaly.detectors.ensemble import EnsembleDetector

    history, today = _split(_frame())
    members = [_NoExplanation(window=4), RollingZScoreDetector(window=6)]
    det = EnsembleDetector(detectors=members).fit(tsanomaly.Panel.from_frame(history, "asn", "ts", "logins"))
    new = tsanomaly.Panel.from_frame(today, "asn", "ts", "logins")
    scores = det.score(new).to_numpy()[[0]]
    expected, how = report.expected_values(det, new.take([0]), scores)
    assert how == "RollingZScoreDetector's expected value"
    own, _ = report.expected_values(det.members_[1], new.take([0]), scores)
    np.testing.assert_array_equal(expected, own)


class _NeighbourDetector(RollingZScoreDetector):
    """Stands in for the matrix profile: explains each alert by an earlier window's start time."""

    explanation_columns = ("expected", "observed", "neighbor_time")

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        columns = super()._explain(panel, scores, ctx_rows, peak_pos)
        neighbour = np.asarray(panel.index)[0] - pd.Timedelta(hours=30)  # a window inside the history
        columns["neighbor_time"] = np.full(len(ctx_rows), neighbour)
        return columns


def test_matrix_profile_neighbour_window_is_shown_when_the_history_reaches_it():
    history, today = _split(_frame())
    hist = tsanomaly.Panel.from_frame(history, "asn", "ts", "logins")
    det = _NeighbourDetector(window=4).fit(hist)
    assert report.neighbour_column(det) == "neighbor_time"
    new = tsanomaly.Panel.from_frame(today, "asn", "ts", "logins")
    section = report.ReportSection.from_detector(det, new, history=hist)
    png, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert png.startswith(PNG_MAGIC)
    assert notes["neighbour"].startswith("nearest neighbour window starts")
    assert "before the plotted span" not in notes["neighbour"]
    # Without the history, the note says where the neighbour is instead of shading it.
    section.history = None
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert "before the plotted span" in notes["neighbour"]
    page = report.render_report([section], top=1)
    assert "nearest neighbour window starts" in page


def test_detector_without_neighbour_column():
    assert report.neighbour_column(RollingZScoreDetector()) is None


def test_matrix_profile_alerts_show_their_neighbour_window(tmp_path):
    import tsanomaly.detectors.matrix_profile  # noqa: F401 - ships with the package: an import failure fails
    history, today = _split(_frame(days=10))
    # A fixed threshold: the scores have an absolute scale (0 = a shape seen before, 1 = uncorrelated).
    det = jobs.fit_frame(history, "asn", "ts", "logins", detector="mp",
                         params={"window": 12, "threshold": 0.5}, device="cpu")
    det.save(tmp_path / "mp.tsa")
    out = tmp_path / "r.html"
    [result] = jobs.report_file([tmp_path / "mp.tsa"], tsio.write_table(today, tmp_path / "t.csv"), out,
                                history=tsio.write_table(history, tmp_path / "h.csv"))
    page = out.read_text()
    assert len(result.alerts) > 0
    assert len(_images(page)) == result.alerts["asn"].nunique() == page.count("nearest neighbour window starts")
    first = result.alerts.iloc[0]
    assert f"nearest neighbour window starts {first['neighbour_start']}, ends {first['neighbour_time']}" in page


@pytest.mark.parametrize("shift, log_scale", [(0.0, True), (-1000.0, False)])
def test_band_is_on_the_log_scale_for_counts_only(shift, log_scale):
    history, today = _split(_frame())
    history, today = history.assign(logins=history["logins"] + shift), today.assign(logins=today["logins"] + shift)
    det = RollingZScoreDetector(window=4).fit(tsanomaly.Panel.from_frame(history, "asn", "ts", "logins"))
    section = report.ReportSection.from_detector(det, tsanomaly.Panel.from_frame(today, "asn", "ts", "logins"))
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert ("log(1 + x)" in notes["band"]) is log_scale


@pytest.mark.parametrize("top", ["0", "-2"])
def test_report_refuses_top_below_one_before_any_work(top, tmp_path, capsys):
    # --top 0 wrote a page that said "No alerts: every scored point stayed at or under its
    # threshold" above a summary counting three alerts.
    history, today = _split(_frame())
    model = _model(tmp_path, history)
    out = tmp_path / "r.html"
    args = ["report", "--model", str(model), "--input", str(tsio.write_table(today, tmp_path / "t.csv")), "--out", str(out)]
    assert main([*args, "--top", top]) == 2
    err = capsys.readouterr().err
    assert f"--top must be at least 1 (contexts plotted per model), got {top}" in err and err.count("\n") == 1
    assert not out.exists()
    section = report.ReportSection.from_detector(tsanomaly.load(model), tsanomaly.Panel.from_frame(today, "asn", "ts", "logins"))
    with pytest.raises(ValueError, match="top must be at least 1"):
        report.render_report([section], top=int(top))


@pytest.mark.parametrize("name", ["a$^$b", "$x_{$", "$x$ usd", "price$", r"back\$slash$"])
def test_dollar_signs_in_the_value_name_are_drawn_as_they_are(name, tmp_path):
    # Two dollar signs made matplotlib read the name as mathtext: a parse error (an empty
    # one-line error from the CLI) or, for "$x$ usd", an italic x.
    from matplotlib import cbook

    assert not cbook.is_math_text(report._literal(name))
    history, today = _split(_frame().rename(columns={"logins": name}))
    det = jobs.fit_frame(history, "asn", "ts", name, detector="baseline", params={"window": 4})
    section = report.ReportSection.from_detector(det, tsanomaly.Panel.from_frame(today, "asn", "ts", name), value=name)
    page = report.render_report([section], top=1)
    assert len(_images(page)) == 1


def _positions_panels():
    """History and new data of three contexts on a time axis of positions (Panel.from_array)."""
    rng = np.random.default_rng(0)
    values = rng.poisson(50, size=(3, 24 * 9)).astype(float)
    values[:, -10] += 3000
    history = tsanomaly.Panel.from_array(values[:, : 24 * 8])
    new = tsanomaly.Panel(values[:, 24 * 8 :], history.contexts, pd.RangeIndex(24 * 8, 24 * 9))
    return history, new


def test_a_time_axis_of_positions_is_refused_up_front():
    # Panel.from_array counts time steps 0, 1, 2...: the report scored it, then failed while
    # plotting with "Converting an integer to a NumPy datetime requires a specified unit".
    history, new = _positions_panels()
    det = RollingZScoreDetector(window=4, seasonal_period=None).fit(history)
    with pytest.raises(ValueError, match="the report needs a time axis of timestamps, but the scored panel has a RangeIndex"):
        report.ReportSection.from_detector(det, new)
    # A section built by hand (as from_result does) is refused by render_report before any plot.
    scores = det.score(new)
    section = report.ReportSection(det, new, scores, det.alerts(new, scores=scores), ["context"])
    assert len(section.alerts) > 0
    with pytest.raises(ValueError, match="needs a time axis of timestamps, but the scored panel of section 0"):
        report.render_report([section])
    with pytest.raises(ValueError, match="needs a time axis of timestamps"):
        report.plot_alert(section, section.alerts.iloc[0])
    # A history of positions beside timestamped data is refused too.
    stamped = tsanomaly.Panel(new.to_numpy(), new.contexts, pd.date_range("2024-01-09", periods=new.n_times, freq="h"))
    det = RollingZScoreDetector(window=4, seasonal_period=None).fit(
        tsanomaly.Panel(history.to_numpy(), history.contexts, pd.date_range("2024-01-01", periods=history.n_times, freq="h")))
    with pytest.raises(ValueError, match="but the history has a RangeIndex"):
        report.ReportSection.from_detector(det, stamped, history=history)


@pytest.mark.parametrize("names", [[None, None], ["country", None], [None]])
def test_unnamed_context_levels_are_named_as_the_alerts_name_them(names):
    # from_detector guessed "context" for every unnamed level while alerts() names an unnamed
    # level of a MultiIndex by its position: rendering failed with a KeyError.
    rng = np.random.default_rng(0)
    values = rng.poisson(50, size=(3, 24 * 9)).astype(float)
    values[:, -10] += 3000
    index = pd.date_range("2024-01-01", periods=values.shape[1], freq="h")
    if len(names) == 1:
        contexts = pd.Index(["US", "BR", "FR"], name=names[0])
    else:
        contexts = pd.MultiIndex.from_tuples([("US", 1), ("US", 2), ("BR", 1)], names=names)
    history = tsanomaly.Panel(values[:, : 24 * 8], contexts, index[: 24 * 8])
    new = tsanomaly.Panel(values[:, 24 * 8 :], contexts, index[24 * 8 :])
    det = RollingZScoreDetector(window=4).fit(history)
    section = report.ReportSection.from_detector(det, new)
    alert_context_columns = list(det.alerts(new).columns[: contexts.nlevels])
    assert section.context_columns == alert_context_columns
    assert list(section.unseen.columns) == [*alert_context_columns, "status"]
    page = report.render_report([section])
    assert len(_images(page)) == 3


@pytest.mark.parametrize("names", [["asn"], ["country", None]])
def test_from_detector_tags_new_contexts_and_counts_absent_ones(names):
    # from_detector's alerts had no cold_start column, so an alert of a context unseen at fit
    # was never tagged "new context", and the summary said 0 fitted contexts absent whatever
    # the input held; the CLI's sections (from_result) got both right.
    rng = np.random.default_rng(0)
    n_hist, n_new = 24 * 8, 24
    index = pd.date_range("2024-01-01", periods=n_hist + n_new, freq="h")
    values = rng.poisson(50, size=(5, n_hist + n_new)).astype(float)
    values[[0, 4], n_hist + 10] += 3000  # a fitted context and the new one both alert
    labels = [("US", 1), ("US", 2), ("BR", 1), ("BR", 2), ("FR", 9)]
    if len(names) == 1:
        contexts = pd.Index([f"{c}{a}" for c, a in labels], name=names[0])
    else:
        contexts = pd.MultiIndex.from_tuples(labels, names=names)
    history = tsanomaly.Panel(values[:4, :n_hist], contexts[:4], index[:n_hist])  # the 5th is new
    new_rows = [0, 1, 4]  # two fitted contexts (rows 2 and 3) are absent from the new data
    new = tsanomaly.Panel(values[new_rows, n_hist:], contexts[new_rows], index[n_hist:])
    det = RollingZScoreDetector(window=4, seasonal_period=None).fit(history)
    section = report.ReportSection.from_detector(det, new)
    assert section.n_absent == 2
    columns = section.context_columns
    keys = [report._context_key(a, columns) for _, a in section.alerts.iterrows()]
    assert contexts[4] in keys and contexts[0] in keys
    assert section.alerts["cold_start"].tolist() == [key == contexts[4] for key in keys]
    assert section.unseen["status"].tolist() == ["cold_start"]
    page = report.render_report([section])
    # Tagged once in the table, and stated in its plot's facts; the fitted context is not.
    assert page.count('<span class="cold">new context</span>') == 1
    assert page.count("new since the fit: scored from a cold start") == 1
    summary = re.search(r'<tr id="summary-0">.*?</tr>', page).group(0)
    assert re.findall(r'<td class="num">([^<]*)</td>', summary)[-2:] == ["1 / 0", "2"]


def test_from_detector_refuses_a_context_column_named_cold_start():
    history, today = _split(_frame().rename(columns={"asn": "cold_start"}))
    det = RollingZScoreDetector(window=4).fit(tsanomaly.Panel.from_frame(history, "cold_start", "ts", "logins"))
    new = tsanomaly.Panel.from_frame(today, "cold_start", "ts", "logins")
    with pytest.raises(ValueError, match="context column 'cold_start' has the name of a column that tsanomaly "
                                         "writes in the report's alerts"):
        report.ReportSection.from_detector(det, new)


class _ScoredSpanNeighbourDetector(_NeighbourDetector):
    """Explains each alert by a window 5 hours into the scored span."""

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        columns = super()._explain(panel, scores, ctx_rows, peak_pos)
        columns["neighbor_time"] = np.full(len(ctx_rows), np.asarray(panel.index)[0] + pd.Timedelta(hours=5))
        return columns


@pytest.mark.parametrize("detector, with_history", [(_NeighbourDetector, True), (_ScoredSpanNeighbourDetector, False)])
def test_a_neighbour_left_out_of_the_plotted_window_is_not_blamed_on_the_history(detector, with_history):
    # Two weeks scored, the alert at their end: the plot shows a window around the alert, so a
    # neighbour in the history (passed) or early in the scored span is left out. The note said
    # "pass the history to see it" all the same.
    history, today = _split(_frame(days=24, bursts=((3, -10, 1, 300),)), days_new=14)
    hist = tsanomaly.Panel.from_frame(history, "asn", "ts", "logins")
    det = detector(window=4).fit(hist)
    new = tsanomaly.Panel.from_frame(today, "asn", "ts", "logins")
    section = report.ReportSection.from_detector(det, new, history=hist if with_history else None)
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert "shown" in notes  # the window around the alert, not the whole scored span
    window_start = notes["shown"].split(" – ")[0]
    assert notes["neighbour"].endswith(f" — before the plotted window, which starts {window_start}")
    assert "pass the history" not in notes["neighbour"]


@pytest.mark.parametrize("name", ["_fails", "__x", "_$x$_"])
def test_a_value_name_starting_with_an_underscore_keeps_its_legend_entry(name, monkeypatch):
    # Matplotlib leaves labels starting with "_" out of the legend: the plotted series lost its entry.
    from matplotlib.figure import Figure

    legends = []
    savefig = Figure.savefig

    def spy(fig, *args, **kwargs):
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    history, today = _split(_frame().rename(columns={"logins": name}))
    det = RollingZScoreDetector(window=4).fit(tsanomaly.Panel.from_frame(history, "asn", "ts", name))
    section = report.ReportSection.from_detector(det, tsanomaly.Panel.from_frame(today, "asn", "ts", name), value=name)
    report.plot_alert(section, section.alerts.iloc[0])
    [legend] = legends
    # As drawn: the zero-width space draws nothing, an escaped dollar sign draws a plain one.
    assert [t.replace("\u200b", "").replace("\\$", "$") for t in legend].count(name) == 1
    assert report._literal("plain") == "plain"  # other names are left as they are


def test_contexts_scored_leaves_out_contexts_that_got_no_score():
    # A context unseen at fit that the detector skips (no cold start: every score NaN) was
    # counted among the "contexts scored", in the model's row and in the total.
    from tsanomaly.detectors import make_detector

    history, today = _split(_frame(n_ctx=5))
    history = history[history["asn"] != "AS4"]  # AS4 is new in today's data
    det = make_detector("stl", periods=24).fit(tsanomaly.Panel.from_frame(history, "asn", "ts", "logins"))
    section = report.ReportSection.from_detector(det, tsanomaly.Panel.from_frame(today, "asn", "ts", "logins"))
    assert section.unseen["status"].tolist() == ["skipped"]  # the STL detector has no cold start
    page = report.render_report([section])
    assert _number(page, "total-contexts") == 4
    assert re.search(r'<td class="num contexts">(\d+)</td>', page).group(1) == "4"
    assert re.search(r'<tr id="summary-0">.*?</tr>', page).group(0).count('<td class="num">0 / 1</td>') == 1


def test_a_zoned_grid_is_drawn_like_its_utc_instants():
    """A panel in a time zone gets the same plot notes as the same instants without a zone (was TypeError)."""
    history, today = _split(_frame())
    naive = [tsanomaly.Panel.from_frame(f, "asn", "ts", "logins") for f in (history, today)]
    zoned = [tsanomaly.Panel(p.values, p.contexts, p.index.tz_localize("UTC").tz_convert("Europe/Paris"))
             for p in naive]
    notes = []
    for hist, new in (naive, zoned):
        det = RollingZScoreDetector(window=4).fit(hist)
        section = report.ReportSection.from_detector(det, new, history=hist)
        notes.append(report.plot_alert(section, section.alerts.iloc[0])[1])
        assert "<img" in report.render_report([section])
    assert notes[1].pop("times") == "in Europe/Paris (axis, facts and notes)"
    assert notes[0] == notes[1]


def test_a_zoned_day_grid_across_a_daylight_saving_switch_is_drawn_with_its_history():
    """In UTC such a grid steps 23 h at the switch, no Panel's grid: the plot converts only what it draws."""
    index = pd.date_range("2024-01-01", "2024-04-15", freq="D", tz="Europe/Berlin")  # crosses 2024-03-31
    values = np.random.default_rng(0).poisson(100, (2, len(index))).astype(float)
    values[0, -3] = 1000
    history = tsanomaly.Panel(values[:, :-20], ["a", "b"], index[:-20])
    new = tsanomaly.Panel(values[:, -20:], ["a", "b"], index[-20:])
    det = RollingZScoreDetector(seasonal_period=7, contamination=0.02).fit(history)
    section = report.ReportSection.from_detector(det, new, history=history)
    assert "<img" in report.render_report([section])
    # The history before a gap that spans the switch: the steps are counted on the wall clock.
    padded = report._history_on_the_grid(np.ones(3), index[80:83], index[86], "D")  # 2024-03-21..23, then 27
    np.testing.assert_array_equal(padded, [1, 1, 1, np.nan, np.nan, np.nan])
    across = report._history_on_the_grid(np.ones(3), index[85:88], index[92], "D")  # 26..28 March, then 2 April
    assert np.isnan(across[3:]).all() and len(across) == 3 + 4


def test_a_monthly_grid_with_its_history_is_drawn_and_an_anchored_grid_keeps_its_days():
    """_history_on_the_grid multiplied by a calendar step's duration, which months have none of (a
    TypeError), and took a history of Wednesdays for one on the Sunday grid (date_range rolls its start)."""
    index = pd.date_range("2020-01-01", periods=48, freq="MS")
    values = np.random.default_rng(0).poisson(100, (2, 48)).astype(float)
    values[0, -3] = 1000
    history = tsanomaly.Panel(values[:, :36], ["a", "b"], index[:36])
    new = tsanomaly.Panel(values[:, 36:], ["a", "b"], index[36:])
    det = RollingZScoreDetector(window=4, seasonal_period=None, contamination=0.05).fit(history)
    assert "<img" in report.render_report([report.ReportSection.from_detector(det, new, history=history)])
    np.testing.assert_array_equal(report._history_on_the_grid(np.ones(3), index[33:36], index[37], "MS"),
                                  [1, 1, 1, np.nan])
    wednesdays = pd.date_range("2024-01-03", periods=10, freq="7D")
    assert len(report._history_on_the_grid(np.ones(10), wednesdays, pd.Timestamp("2024-03-17"), "W-SUN")) == 0


@pytest.mark.parametrize("value, text", [
    (1999999.0, "1,999,999"),  # was 2e+06
    (12345.0, "12,345"),  # was 1.234e+04
    (np.int64(1234567), "1,234,567"),
    (np.float64(674479.461756), "674,479"),
    (22.581276, "22.5813"),
    (32.5, "32.5"),
    (0.0, "0"),
    (0.000123456, "0.000123456"),
    (1e20, "1e+20"),
    (np.nan, "—"),
    (None, "—"),  # was "None"
    (pd.NA, "—"),  # was "<NA>"
    (pd.NaT, "—"),  # was "NaT"
    (np.datetime64("NaT"), "—"),
    (True, "yes"),
    ("AS13335", "AS13335"),
    (pd.Timestamp("2024-05-01 13:00"), "2024-05-01 13:00:00"),
])
def test_numbers_are_written_in_full_and_missing_values_as_a_dash(value, text):
    assert report._fmt(value) == text


def test_a_score_just_above_its_threshold_never_reads_as_equal_to_it():
    assert report._fmt(10.03124) != report._fmt(10.02981)  # equal at 4 significant digits
    score, threshold = report._fmt_score(np.float64(10.0312412), np.float64(10.0312411))
    assert score != threshold and float(score) > float(threshold)
    assert report._fmt_score(2.5, 2.5) == ("2.5", "2.5")
    assert report._fmt_score(np.nan, 3.0) == ("—", "3")


def test_large_counts_are_written_in_full_in_the_alert_table_and_facts():
    rng = np.random.default_rng(3)
    index = pd.date_range("2024-04-01", periods=24 * 12, freq="h")
    values = rng.poisson(30, (3, len(index))).astype(float)
    values[1, -10] = 1999999.0  # a two-million failed-login hour
    values[2, -5] = 12345.0
    full = tsanomaly.Panel(values, pd.Index(["a", "b", "c"], name="asn"), index)
    hist, new = full.time_slice(end=index[-49]), full.time_slice(start=index[-48])
    section = report.ReportSection.from_detector(RollingZScoreDetector(window=4).fit(hist), new)
    page = report.render_report([section])
    assert "observed=1,999,999" in page and "<th>observed</th><td>1,999,999</td>" in page
    assert "observed=12,345" in page and "<th>observed</th><td>12,345</td>" in page
    assert "e+0" not in re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)


@pytest.mark.parametrize("label", [np.nan, "unknown"])
def test_a_missing_context_label_is_one_context_with_its_other_alerts(label):
    # NaN never equals itself: the other alert of a context whose label is missing (an IP without
    # an ASN name) was neither shaded nor counted, and widened the band (library path only).
    frame = _frame(bursts=((1, -30, 3, 500), (1, -10, 2, 400), (3, -10, 1, 300)))
    frame["asn"] = frame["asn"].astype(object)
    # Panel.from_frame refuses rows without a label; a Panel built otherwise (from a pivot) may hold
    # one: a placeholder that sorts last, where from_frame put a missing label, replaced after.
    placeholder = "~missing"
    frame.loc[frame["asn"] == "AS1", "asn"] = placeholder

    def panel_of(part):
        panel = tsanomaly.Panel.from_frame(part, "asn", "ts", "logins", fill="zero")
        return tsanomaly.Panel(panel.values, panel.contexts.where(panel.contexts != placeholder, label), panel.index)

    history, today = _split(frame)
    hist = panel_of(history)
    det = RollingZScoreDetector(window=4).fit(hist)
    section = report.ReportSection.from_detector(det, panel_of(today), history=hist)
    mine = section.alerts["asn"].isna() if isinstance(label, float) else section.alerts["asn"] == "unknown"
    assert mine.sum() == 2
    first = section.alerts[mine].iloc[0]
    _, notes = report.plot_alert(section, first)
    assert notes["other alerts"].startswith("1 more on this context")
    np.testing.assert_array_equal(report._same_context(section.alerts, first, ["asn"]), mine.to_numpy())


def _drawn_figures(monkeypatch):
    """The figures plot_alert draws, as they are when saved (a list filled as plots are made)."""
    from matplotlib.figure import Figure

    figures = []
    savefig = Figure.savefig

    def spy(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figures


def _xlim(ax):
    from matplotlib import dates as mdates

    return [pd.Timestamp(mdates.num2date(x)).tz_localize(None) for x in ax.get_xlim()]


@pytest.mark.parametrize("with_history", [True, False])
def test_other_alerts_of_the_context_outside_the_plotted_window_do_not_stretch_the_axis(monkeypatch, with_history):
    # 60 scored days, the plot shows ten around the alert: the other alerts of the context, weeks
    # away, were shaded all the same, and the axis ran from mid-April to July.
    figures = _drawn_figures(monkeypatch)
    rng = np.random.default_rng(3)
    index = pd.date_range("2024-04-01", periods=24 * 90, freq="h")
    hours = np.arange(len(index)) % 24
    values = rng.poisson(30 * (1 + 0.5 * np.sin(2 * np.pi * hours / 24)), (2, len(index))).astype(float)
    values[1, -20] += 600
    values[1, -1400] += 300
    values[1, -1410] += 400  # another alert inside the plotted window
    full = tsanomaly.Panel(values, pd.Index(["a", "b"], name="asn"), index)
    hist, new = full.time_slice(end=index[-1441]), full.time_slice(start=index[-1440])
    det = RollingZScoreDetector(window=4).fit(hist)
    section = report.ReportSection.from_detector(det, new, history=hist if with_history else None)
    alert = section.alerts[section.alerts["peak_time"] == index[-1400]].iloc[0]
    assert (section.alerts["asn"] == "b").sum() > 1
    _, notes = report.plot_alert(section, alert)
    shown_from, shown_to = (pd.Timestamp(t) for t in notes["shown"].split(" of ")[0].split(" – "))
    half = pd.Timedelta(minutes=30)
    first = shown_from - pd.Timedelta(days=14) if with_history else shown_from  # two weeks of hourly history
    [fig] = figures
    assert _xlim(fig.axes[0]) == [first - half, shown_to + half]
    assert _xlim(fig.axes[1]) == _xlim(fig.axes[0])
    # Every shaded span lies inside the axis.
    assert len(fig.axes[0].patches) == 2  # this alert and the other one in the window
    for patch in fig.axes[0].patches:
        xs = [pd.Timestamp(mdates_x).tz_localize(None) for mdates_x in _patch_x(patch)]
        assert first - half <= min(xs) and max(xs) <= shown_to + half
    assert re.fullmatch(r"\d+ more on this context, 1 of them in the plotted range, shaded lightly",
                        notes["other alerts"])


def _patch_x(patch):
    from matplotlib import dates as mdates

    return [mdates.num2date(x) for x in patch.get_path().transformed(patch.get_patch_transform()).vertices[:, 0]]


class _StraddlingNeighbourDetector(_NeighbourDetector):
    """Explains each alert by a window that starts 2 hours before ``neighbour`` (set by the test)."""

    neighbour = pd.Timestamp("2024-04-01")

    def _explain(self, panel, scores, ctx_rows, peak_pos):
        columns = super()._explain(panel, scores, ctx_rows, peak_pos)
        columns["neighbor_time"] = np.full(len(ctx_rows), np.datetime64(self.neighbour - pd.Timedelta(hours=2)))
        return columns


def test_a_neighbour_window_straddling_the_plotted_window_is_cut_at_the_axis_and_said_so(monkeypatch):
    figures = _drawn_figures(monkeypatch)
    history, today = _split(_frame(days=24, bursts=((3, -10, 1, 300),)), days_new=14)
    hist = tsanomaly.Panel.from_frame(history, "asn", "ts", "logins")
    new = tsanomaly.Panel.from_frame(today, "asn", "ts", "logins")
    det = _StraddlingNeighbourDetector(window=4).fit(hist)
    alerts = det.alerts(new)
    alert = alerts.iloc[0]
    n = new.n_times
    lo, _ = report._plot_window(n, new.index.get_loc(alert["start"]), new.index.get_loc(alert["end"]),
                                report._MAX_PLOT_POINTS)
    assert lo > 0
    det.neighbour = new.index[lo]  # the neighbour window runs from 2 h before the plotted window into it
    section = report.ReportSection.from_detector(det, new, history=hist)
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert notes["neighbour"].endswith(f"it starts before the plotted window, which starts {new.index[lo]}")
    [fig] = figures
    left, right = _xlim(fig.axes[0])
    assert left == new.index[lo] - pd.Timedelta(minutes=30)
    [band] = [p for p in fig.axes[0].patches if p.get_label() == "nearest neighbour"]
    xs = [pd.Timestamp(x).tz_localize(None) for x in _patch_x(band)]
    assert min(xs) == left and max(xs) == new.index[lo] + pd.Timedelta(minutes=90)


def test_on_a_zoned_grid_the_notes_write_times_in_its_zone_as_the_facts_do():
    # The notes were written from the alert converted to naive UTC, the facts beside them from the
    # alert itself: "neighbor_time 2024-04-09 20:00:00+02:00" above "starts 2024-04-09 18:00:00".
    history, today = _split(_frame(days=24, bursts=((3, -10, 1, 300),)), days_new=14)
    naive = [tsanomaly.Panel.from_frame(f, "asn", "ts", "logins") for f in (history, today)]
    hist, new = [tsanomaly.Panel(p.values, p.contexts, p.index.tz_localize("UTC").tz_convert("Europe/Paris"))
                 for p in naive]
    det = _NeighbourDetector(window=4).fit(hist)
    section = report.ReportSection.from_detector(det, new, history=hist)
    alert = section.alerts.iloc[0]
    _, notes = report.plot_alert(section, alert)
    stamp = alert["neighbor_time"]
    assert stamp.tz is not None
    end = stamp + pd.Timedelta(hours=3)
    assert notes["neighbour"].startswith(f"nearest neighbour window starts {stamp}, ends {end}")
    shown_from, shown_to = notes["shown"].split(" of ")[0].split(" – ")
    assert pd.Timestamp(shown_from) in new.index and pd.Timestamp(shown_to) in new.index
    assert shown_from.endswith("+02:00") and shown_to.endswith("+02:00")
    assert notes["times"] == "in Europe/Paris (axis, facts and notes)"
    page = report.render_report([section], top=1)
    assert "in UTC" not in page
    assert f"<th>neighbor_time</th><td>{stamp}</td>" in page and f"window starts {stamp}," in page


def test_hourly_input_with_a_time_zone_says_its_times_are_in_utc(tmp_path):
    # Panel.from_frame keeps an hourly column in America/New_York as naive UTC times: the page showed
    # 22:00 for a burst at 18:00 local and never said which clock it used.
    frame = _frame(days=16)
    frame["ts"] = frame["ts"].dt.tz_localize("America/New_York")
    history, today = _split(frame, 3)
    model = _model(tmp_path, history)
    out = tmp_path / "r.html"
    [result] = jobs.report_file([model], tsio.write_table(today, tmp_path / "t.parquet"), out)
    assert result.panel.index.tz is None and len(result.alerts)
    page = out.read_text()
    assert re.search(r'<p class="muted" id="times-zone">Times on this page are in UTC\. ', page)
    assert page.count("<th>times</th><td>in UTC (axis, facts and notes)</td>") == len(_images(page))
    # Naive input: shown as written, no zone claimed.
    naive_history, naive_today = _split(_frame(days=16), 3)
    model = _model(tmp_path, naive_history, name="naive.tsa")
    jobs.report_file([model], tsio.write_table(naive_today, tmp_path / "n.parquet"), out)
    page = out.read_text()
    assert 'id="times-zone"' not in page and "<th>times</th><td>in " not in page


def test_times_in_utc_tells_a_zoned_or_offset_column_on_a_naive_grid():
    naive = pd.date_range("2024-04-01", periods=3, freq="h")
    zoned = pd.Series(naive.tz_localize("America/New_York"))
    assert report.times_in_utc(zoned, naive)
    assert report.times_in_utc(pd.Series(naive.tz_localize("UTC")), naive)
    assert report.times_in_utc(pd.Series(["2024-04-01T00:00:00+02:00", None]), naive)
    assert report.times_in_utc(pd.Series(["2024-04-01T00:00:00Z"]), naive)
    assert not report.times_in_utc(pd.Series(["2024-04-01T00:00:00"]), naive)
    assert not report.times_in_utc(pd.Series(naive), naive)
    assert not report.times_in_utc(zoned, zoned.dt.tz_convert("Europe/Paris").array)  # a zoned grid names its zone


def test_a_zoned_grid_names_its_zone_on_the_page():
    history, today = _split(_frame())
    hist, new = [tsanomaly.Panel.from_frame(f, "asn", "ts", "logins") for f in (history, today)]
    hist, new = [tsanomaly.Panel(p.values, p.contexts, p.index.tz_localize("UTC").tz_convert("Europe/Paris"))
                 for p in (hist, new)]
    section = report.ReportSection.from_detector(RollingZScoreDetector(window=4).fit(hist), new)
    page = report.render_report([section])
    assert '<p class="muted" id="times-zone">Times on this page are in Europe/Paris.</p>' in page


def _one_new_day(with_history=True):
    """A daily job's report: one new day, an alert on it (yesterday's job)."""
    rng = np.random.default_rng(3)
    index = pd.date_range("2024-01-01", periods=120, freq="D")
    values = rng.poisson(30, (3, len(index))).astype(float)
    values[1, -1] += 500
    full = tsanomaly.Panel(values, pd.Index(["a", "b", "c"], name="asn"), index)
    hist, new = full.time_slice(end=index[-2]), full.time_slice(start=index[-1])
    det = RollingZScoreDetector(window=4).fit(hist)
    return report.ReportSection.from_detector(det, new, history=hist if with_history else None)


def test_a_single_new_point_is_drawn_with_markers_and_a_band_from_the_history(monkeypatch):
    # One new day: value, expected value and score were lines of one point (nothing drawn), and the
    # band's σ came from that point alone (none: "σ = nan", no band).
    figures = _drawn_figures(monkeypatch)
    section = _one_new_day()
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    [fig] = figures
    ax, ax_s = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in (section.value, "expected"):
        assert len(lines[name].get_xdata()) == 1 and lines[name].get_marker() == "o"
    [score] = [line for line in ax_s.get_lines() if len(line.get_xdata()) == 1 and line.get_linestyle() == "-"]
    assert score.get_marker() == "o"
    assert "nan" not in notes["band"]
    sigma = float(re.search(r"σ = ([0-9.]+)\)", notes["band"]).group(1))
    assert sigma > 0 and "the history's residual" in notes["band"]
    # The band is drawn, and visible at its one point: a bar from its lower to its upper edge.
    bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    [bar] = bars
    [[(_, low), (_, high)]] = bar.get_segments()
    assert high > low


def test_without_points_for_a_band_the_caption_says_so():
    section = _one_new_day(with_history=False)
    _, notes = report.plot_alert(section, section.alerts.iloc[0])
    assert notes["band"].endswith("; no band: too few points to estimate its width")
    assert "σ" not in notes["band"]


def test_markers_show_every_point_of_a_short_series_and_the_isolated_points_of_a_long_one():
    short = np.arange(10.0)
    assert report._markers(short)["marker"] == "o" and "markevery" not in report._markers(short)
    long = np.arange(200.0)
    assert report._markers(long) == {}  # a plain line
    long[[50, 52]] = np.nan  # 51 has no finite neighbour
    long[0:1] = np.nan  # 1 still has 2 after it
    assert np.flatnonzero(report._markers(long)["markevery"]).tolist() == [51]


@pytest.mark.parametrize("name", ["r#1.html", "100% report.html", "a b?.html", "plain.html"])
def test_the_screenshot_script_percent_encodes_the_report_url(tmp_path, name):
    # "file://$REPORT_ABS" named another file for a report called "r#1.html" (a fragment) or one
    # with "%20" in its name, and none for a space.
    import shutil
    import subprocess
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"
    folder = tmp_path / "my reports"
    folder.mkdir()
    path = folder / name
    path.write_text("<html></html>")
    # Sourced with a report that does not exist: a script that ran on when sourced (no guard) stops
    # at its first check instead of installing Chromium and taking a screenshot.
    missing = tmp_path / "no such report.html"
    url = subprocess.run(["bash", "-c", 'source "$1" "$2"; file_url "$3"', "_", str(script), str(missing), str(path)],
                         check=True, capture_output=True, text=True).stdout.strip()
    parsed = urlparse(url)
    assert parsed.scheme == "file" and not parsed.fragment and not parsed.query
    assert Path(unquote(parsed.path)) == path.resolve()
    assert " " not in url
