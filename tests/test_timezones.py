"""The time-zone rules module that the jobs and Spark share."""
from __future__ import annotations

import doctest

import numpy as np
import pandas as pd

from tsanomaly import jobs, timezones


def test_jobs_re_exports_the_time_zone_functions_it_documents():
    """``tsanomaly.jobs.local_time`` is in the README, and ``check_time_zone`` and ``times_in_zone``
    in jobs' ``__all__``: they must stay the very functions of tsanomaly.timezones."""
    for name in ("check_time_zone", "times_in_zone", "local_time"):
        assert getattr(jobs, name) is getattr(timezones, name)
        assert name in jobs.__all__


def test_localize_wall_clock_flags_skipped_and_repeated_times_but_not_missing_ones():
    wall = pd.DatetimeIndex(["2026-03-29 01:00", "2026-03-29 02:30", None, "2026-10-25 02:30", "2026-10-25 03:30"])
    local, no_instant = timezones.localize_wall_clock(wall, "Europe/Paris")
    np.testing.assert_array_equal(no_instant, [False, True, False, True, False])  # NaT is missing, not refused
    assert local[0] == pd.Timestamp("2026-03-29 00:00", tz="UTC")  # 01:00 in winter is UTC+1
    assert local[4] == pd.Timestamp("2026-10-25 02:30", tz="UTC")  # 03:30 after the autumn switch is UTC+1
    assert local[[1, 2, 3]].isna().all()


def test_the_module_examples_hold():
    result = doctest.testmod(timezones)
    assert result.attempted >= 3 and result.failed == 0
