"""The ASV suite can be collected: ASV takes every public class in a benchmark module's
namespace, imported ones included, and runs its ``time_*`` (``mem_*``, ...) methods as
benchmarks. An imported class with such a method (Panel.time_slice) made ASV try to build
it, and the whole suite failed to load."""
import importlib
import inspect
import re
from pathlib import Path

import pytest

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
#: ASV's benchmark name prefixes (asv.benchmark: time, timeraw, mem, peakmem, track).
ASV_NAME = re.compile(r"^(time|timeraw|mem|peakmem|track)_|^(Time|Timeraw|Mem|Peakmem|Track)[A-Z_]")


def _asv_benchmarks(module):
    """(name, defining module) of everything ASV would collect from ``module``."""
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(obj):
            found += [(f"{name}.{attr}", obj.__module__) for attr in dir(obj) if ASV_NAME.match(attr)]
        elif inspect.isfunction(obj) and ASV_NAME.match(name):
            found.append((name, obj.__module__))
    return found


@pytest.mark.parametrize("path", sorted(BENCHMARK_DIR.glob("bench_*.py")), ids=lambda p: p.stem)
def test_asv_collects_only_the_modules_own_benchmarks(path):
    module = importlib.import_module(f"benchmarks.{path.stem}")
    found = _asv_benchmarks(module)
    foreign = [name for name, owner in found if owner != module.__name__]
    assert not foreign, f"{path.name}: ASV would run imported objects as benchmarks: {foreign}"
    assert found, f"{path.name} defines no benchmark ASV would find"


def test_the_check_sees_an_imported_class():
    """The check itself: Panel, imported into a module, is found as a foreign benchmark."""
    from types import ModuleType

    from tsanomaly import Panel

    module = ModuleType("fake_bench")
    module.Panel = Panel
    assert ("Panel.time_slice", "tsanomaly.panel") in _asv_benchmarks(module)
