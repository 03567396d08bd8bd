"""Training jobs that share one machine's cores keep in step (`StepPacer`).

Flower's simulation trains each virtual site in its own one-thread process. Three sites on two
cores are three CPU-bound processes on two run queues, and Linux does not share them evenly: in
one measured denoiser round (55 steps a site, demo) two sites finished in 30 s and the third, starved
while they ran, in 51 s, alone on one core while the other idled. A round waits for its slowest
site. So a paced site pauses while it is more than `slack` steps ahead of the slowest site still
training: the core goes to a site that is behind, and the sites finish together, mostly two at a
time on two cores (benchmarks/results/site_pacing.md).

The sites share nothing but one small file each in a common folder: the round (any key the
sites agree on, e.g. "denoiser-7"), the steps done and the steps in all. A site whose file is
older than `stale_s` (it crashed, or is between rounds) is not waited for, nor is one that has
done all its steps (sites may have different numbers of steps: the gate's judges of a site
without finding labels), and no site waits more than `max_wait_s` before any one step. What a
site computes does not change, only when it computes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


class StepPacer:
    """One site's side of the pacing: `progress(done, total)` before each step and once at the end."""

    def __init__(
        self,
        folder: Path,
        name: str,
        round_key: str,
        *,
        slack: int = 2,
        poll_s: float = 0.02,
        max_wait_s: float = 5.0,
        stale_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if slack < 0 or any(char.isspace() for char in round_key) or not round_key:
            raise ValueError(f"slack must be >= 0 and the round key one word, got {slack} and {round_key!r}")
        self.folder, self.name, self.round_key = Path(folder), name, round_key
        self.slack, self.poll_s, self.max_wait_s, self.stale_s = slack, poll_s, max_wait_s, stale_s
        self.sleep = sleep
        self.waited_s = 0.0  # in total over this pacer's steps (what the pacing cost this site)

    def progress(self, done: int, total: int) -> None:
        """Publish `done` of this round's `total` steps, then wait (bounded) while too far ahead."""
        self._publish(done, total)
        if done >= total:
            return
        waited = 0.0
        while waited < self.max_wait_s:
            behind = self._others_in_progress()
            if not behind or done <= min(behind) + self.slack:
                break
            self.sleep(self.poll_s)
            waited += self.poll_s
        self.waited_s += waited

    def _publish(self, done: int, total: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        mine = self.folder / self.name
        partial = mine.with_name(f".{self.name}.partial")
        partial.write_text(f"{self.round_key} {done} {total}")
        os.replace(partial, mine)  # others never read a half-written file

    def _others_in_progress(self) -> list[int]:
        """Steps done by the other sites still training this round (fresh files only)."""
        now, counts = time.time(), []
        try:
            paths = list(self.folder.iterdir())
        except OSError:  # the folder removed under us (the run ending): nobody left to wait for
            return counts
        for path in paths:
            if path.name == self.name or path.name.startswith("."):
                continue
            try:
                fresh = now - path.stat().st_mtime < self.stale_s
                round_key, done, total = path.read_text().split()
                done, total = int(done), int(total)
            except (OSError, ValueError):  # replaced or removed while read, or not a pace file
                continue
            if fresh and round_key == self.round_key and done < total:
                counts.append(done)
        return counts
