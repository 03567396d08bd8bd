"""A pytest plugin: CPU seconds per test, so the everyday loop can be sized on a shared machine.

Wall times on a loaded 2-core machine say more about the neighbours than about the tests. CPU
seconds (pytest's process, all its threads, plus the child processes it waited for) do not
depend on the load; with OMP_NUM_THREADS=1 they are about what a test takes on idle cores.

    OMP_NUM_THREADS=1 PYTHONPATH=benchmarks CPU_TIMES_OUT=cpu.json \\
        python -m pytest -m "not slow" -p pytest_cpu_times

writes {"load_end": os.getloadavg(), "rows": [[test id, cpu s, wall s, 1-min load at start]]}.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

_ROWS: list[tuple[str, float, float, float]] = []


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201 (a hook wrapper)
    cpu, wall, load = _cpu_seconds(), time.perf_counter(), os.getloadavg()[0]
    yield
    _ROWS.append((item.nodeid, round(_cpu_seconds() - cpu, 2), round(time.perf_counter() - wall, 2), load))


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = Path(os.environ.get("CPU_TIMES_OUT", "cpu-times.json"))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"load_end": os.getloadavg(), "rows": _ROWS}))
    tmp.replace(out)
