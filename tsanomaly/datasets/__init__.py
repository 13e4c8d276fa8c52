"""Data sets: synthetic security panels with labelled attacks, and readers for public benchmarks."""
from tsanomaly.datasets.synthetic import ATTACK_KINDS, METRICS, SecurityPanel, make_security_panel

__all__ = ["ATTACK_KINDS", "METRICS", "SecurityPanel", "make_security_panel"]
