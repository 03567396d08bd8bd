"""What the scaling benchmarks share: the anonymize modes to compare, and peak memory readings.

Imported by the scripts beside it (`python benchmarks/<script>.py` puts this folder on sys.path).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

STATUS = Path("/proc/self/status")
# The checkout's folders that install as privdiff.<name> (setup.py's NAMESPACED).
NAMESPACED = ("client", "common", "server", "simulation", "configs")


def import_checkout(root: Path) -> None:
    """Make the checkout at `root` importable as setup.py installs it, where privdiff is not
    installed (a GPU machine's own torch environment, with only the dependencies added):
    privdiff_core from the checkout's top, and configs/, client/, ... as privdiff.configs,
    privdiff.client, ... through a temporary folder of links. For this process (sys.path) and the
    commands it starts (PYTHONPATH). Nothing happens where privdiff is installed."""
    try:
        if importlib.util.find_spec("privdiff.configs") is not None:
            return
    except ModuleNotFoundError:  # no package privdiff at all
        pass
    links = Path(tempfile.mkdtemp(prefix="privdiff-checkout-"))
    (links / "privdiff").mkdir()
    for name in NAMESPACED:
        (links / "privdiff" / name).symlink_to(root / name, target_is_directory=True)
    entries = [str(root), str(links)]
    sys.path[:0] = entries
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [*entries, os.environ.get("PYTHONPATH")]))


def anonymize_modes(ddim_steps: int) -> dict[str, dict[str, Any]]:
    """img2img (the config's strength) and generative, as keyword arguments of
    `Anonymizer.anonymize` plus a label. Where this Anonymizer has no generative mode yet, the
    generative cost is measured on its proxy: img2img at strength 1.0, i.e. the full
    `ddim_steps` DDIM steps from pure noise, the same number of steps a generative pass runs."""
    from privdiff_core.anonymizer import Anonymizer

    has_mode = "mode" in inspect.signature(Anonymizer.anonymize).parameters
    generative = (
        {"kwargs": {"mode": "generative"}, "label": "generative (Anonymizer mode='generative')"}
        if has_mode
        else {
            "kwargs": {"strength": 1.0},
            "label": f"generative proxy: img2img at strength 1.0 ({ddim_steps} DDIM steps); "
            "this Anonymizer has no mode='generative'",
        }
    )
    # img2img named, not left to the config's default mode: that default became generative, and the
    # "img2img" points then measured the generative mode twice (GPU lease, 2026-12-05).
    img2img = {"kwargs": {"mode": "img2img"} if has_mode else {}, "label": "img2img at the config's strength"}
    return {"img2img": img2img, "generative": generative}


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{STATUS} has no {field} line (not Linux?)")
    return int(match.group(1))


def reset_peak_rss() -> int:
    """Start a new peak-RSS window for this process (Linux: clear_refs 5 resets VmHWM); returns
    the resident set now, in bytes. Freed heap is handed back to the system first (glibc keeps
    it otherwise), so the next peak over this baseline is what the measured call allocates."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Peak resident set of this process since the last `reset_peak_rss`, in bytes."""
    return _status_kib("VmHWM") * 1024


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages: stored beside every measured point."""
    return [round(x, 2) for x in os.getloadavg()]


def write_report(out: Path, payload: dict[str, Any], markdown: str | None = None) -> None:
    """The JSON and, given one, the Markdown table beside it (`out` with .md), each written to a
    temporary name and renamed: a reader never finds half a file, even after an interruption."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [(out, json.dumps(payload, indent=2))]
    if markdown is not None:
        files.append((out.with_suffix(".md"), markdown.rstrip("\n") + "\n"))
    for path, text in files:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
