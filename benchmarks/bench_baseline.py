"""ASV throughput of the baseline detector (series scored per second), on CPU and GPU."""
from benchmarks.common import best_time, require_device
from tsanomaly import RollingZScoreDetector
from tsanomaly.datasets import make_security_panel


class BaselineThroughput:
    """Fit on three weeks of hourly counts, then score one more week, per context; seasonal
    comparison only (level_window None) or with the last 21 days at every hour (504)."""

    params = (["cpu", "cuda"], [1_000, 10_000], [None, 504])
    param_names = ["device", "n_contexts", "level_window"]
    unit = "series/s"
    timeout = 600

    def setup(self, device, n_contexts, level_window):
        require_device(device)
        data = make_security_panel(n_contexts=n_contexts, n_days=28, seed=0)
        history, new = data.split("2024-01-22")
        self.history = history.panels["failed_logins"].to(device)
        self.new = new.panels["failed_logins"].to(device)
        self.make = lambda: RollingZScoreDetector(level_window=level_window, device=device)
        self.detector = self.make().fit(self.history)

    def track_fit_series_per_second(self, device, n_contexts, level_window):
        seconds = best_time(lambda: self.make().fit(self.history), device)
        return n_contexts / seconds

    def track_score_series_per_second(self, device, n_contexts, level_window):
        seconds = best_time(lambda: self.detector.score(self.new), device)
        return n_contexts / seconds
