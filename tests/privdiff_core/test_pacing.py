"""StepPacer: a site ahead of the slowest waits for it, and never for a site that is gone."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from privdiff_core.training.pacing import StepPacer


def _write(folder, name: str, round_key: str, done: int, total: int = 10, age_s: float = 0.0) -> None:
    path = folder / name
    path.write_text(f"{round_key} {done} {total}")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_a_site_ahead_waits_until_the_slowest_is_within_the_slack(tmp_path):
    _write(tmp_path, "site-1", "denoiser-7", 0)
    _write(tmp_path, "site-2", "denoiser-7", 6)
    sleeps: list[float] = []

    def other_site_steps(seconds: float) -> None:  # while this site sleeps, site-1 trains
        sleeps.append(seconds)
        _write(tmp_path, "site-1", "denoiser-7", len(sleeps))

    pacer = StepPacer(tmp_path, "site-0", "denoiser-7", slack=2, sleep=other_site_steps)
    pacer.progress(5, 10)
    assert len(sleeps) == 3  # site-1 at 3: 5 <= 3 + 2
    assert pacer.waited_s == pytest.approx(3 * pacer.poll_s)
    assert (tmp_path / "site-0").read_text() == "denoiser-7 5 10"
    pacer.progress(6, 10)  # site-1 at 4 is within 2 steps now: no wait
    assert len(sleeps) == 4


@pytest.mark.parametrize(
    "name, round_key, done, total, age_s",
    [
        ("finished", "denoiser-7", 10, 10, 0.0),  # all its steps done
        ("finished-fewer-steps", "denoiser-7", 4, 4, 0.0),  # e.g. a gate site without finding labels
        ("stale", "denoiser-7", 0, 10, 60.0),  # crashed, or between rounds
        ("earlier-round", "denoiser-6", 0, 10, 0.0),
    ],
)
def test_sites_that_are_not_training_this_round_are_not_waited_for(
    tmp_path, name, round_key, done, total, age_s
):
    _write(tmp_path, name, round_key, done, total, age_s)
    (tmp_path / "not-a-pace-file").write_text("hello")
    (tmp_path / "garbled").write_text("denoiser-7 x 10")
    (tmp_path / ".site-9.partial").write_text("denoiser-7")

    def must_not_sleep(seconds: float) -> None:
        raise AssertionError("waited for a site that is not training")

    StepPacer(tmp_path, "site-0", "denoiser-7", slack=0, sleep=must_not_sleep).progress(9, 10)


def test_the_wait_before_a_step_is_bounded(tmp_path):
    _write(tmp_path, "site-1", "gate-judges", 0, total=50)  # alive but never moves on
    slept: list[float] = []
    pacer = StepPacer(
        tmp_path, "site-0", "gate-judges", slack=1, poll_s=0.5, max_wait_s=2.0, sleep=slept.append
    )
    pacer.progress(20, 50)
    assert slept == [0.5] * 4 and pacer.waited_s == 2.0
    pacer.progress(50, 50)  # the end: published, no wait
    assert len(slept) == 4 and (tmp_path / "site-0").read_text() == "gate-judges 50 50"


def test_paced_threads_keep_in_step_and_all_finish(tmp_path):
    """Three real workers, one ten times slower per step: the fast ones never run more than the
    slack ahead of it while it trains, and every worker does all its steps."""
    steps, slack = 25, 2
    lead_at_step: dict[str, list[int]] = {"site-0": [], "site-1": []}
    done = {name: 0 for name in ("site-0", "site-1", "site-2")}

    def worker(name: str, step_s: float) -> None:
        pacer = StepPacer(tmp_path, name, "autoencoder-1", slack=slack, poll_s=0.002, max_wait_s=5.0)
        for index in range(steps):
            pacer.progress(index, steps)
            if name in lead_at_step and done["site-2"] < steps:
                lead_at_step[name].append(index - done["site-2"])
            time.sleep(step_s)
            done[name] = index + 1
        pacer.progress(steps, steps)

    threads = [
        threading.Thread(target=worker, args=(name, 0.01 if name == "site-2" else 0.001)) for name in done
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(not thread.is_alive() for thread in threads)
    assert done == dict.fromkeys(done, steps)
    # site-2's file lags its counter by at most the step it is in
    assert max(max(leads) for leads in lead_at_step.values()) <= slack + 1


def test_a_round_key_is_one_word():
    with pytest.raises(ValueError, match="one word"):
        StepPacer(Path("."), "site-0", "denoiser 7")


def test_a_pace_folder_removed_under_a_site_stops_the_waiting(tmp_path):
    folder = tmp_path / "site-pace"
    pacer = StepPacer(folder, "site-0", "denoiser-1", slack=0)
    pacer.progress(0, 10)
    _write(folder, "site-1", "denoiser-1", 0)

    def remove_folder(seconds: float) -> None:  # the run ends while this site waits
        shutil.rmtree(folder)

    pacer.sleep = remove_folder
    pacer.progress(5, 10)  # waits once, then finds no folder: no error, no more waiting
    assert not folder.exists() and pacer.waited_s == pytest.approx(pacer.poll_s)
