"""Data sets: synthetic security panels with labelled attacks, and readers for public benchmarks."""
from tsanomaly.datasets.nab import LabelledSeries, read_nab
from tsanomaly.datasets.synthetic import ATTACK_KINDS, METRICS, SecurityPanel, make_security_panel
from tsanomaly.datasets.ucr import read_ucr

__all__ = ["ATTACK_KINDS", "METRICS", "LabelledSeries", "SecurityPanel", "make_security_panel", "read_nab", "read_ucr"]
