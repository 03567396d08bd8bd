"""A site's Adam state between federated rounds, kept in files on the site (`OptimizerStore`).

A fresh optimizer every round trains the federated model far worse than central training, so
each site keeps its moments from one round to the next. They used to live in Flower's
`context.state`, which the node hands to every message's ClientApp and takes back after it:
in simulation pickled to and from a Ray actor, in deployment sent to a fresh `flwr-clientapp`
process, four times a round (SecAgg+'s stages), ~80 MB each way for the demo denoiser: a demo
round of one local step took 5.0 s with it there, 3.0 s with it here (benchmarks/round_overhead.py,
benchmarks/results/round_overhead_session32.json). In files the state is read once and written once a
round, and still never leaves the site.

A state is kept per (stage, round) it came from, and a round starts from the latest one of an
EARLIER round: a round the server rejects and runs again (server/workflow.py) then starts where
its first attempt did, not from that attempt's moments. Only the run in progress is kept: the
files of other runs (a run that crashed, the previous federation) are removed when a round of
this one keeps its state.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from privdiff.common.errors import FederationError

if TYPE_CHECKING:
    import torch

_ROUND_FILE = re.compile(r"^(?P<stage>[a-z_]+)-round-(?P<round>\d+)\.pt$")


class OptimizerStore:
    """`folder/run-<run id>/<stage>-round-<r>.pt`, one file per round kept (at most two a stage)."""

    def __init__(self, folder: Path, run_id: int):
        self.folder = Path(folder)
        self.run_dir = self.folder / f"run-{int(run_id)}"

    def rounds(self, stage: str) -> dict[int, Path]:
        """The rounds of `stage` whose state is kept, and their files."""
        if not self.run_dir.is_dir():
            return {}
        found = {}
        for path in self.run_dir.iterdir():
            match = _ROUND_FILE.match(path.name)
            if match and match["stage"] == stage:
                found[int(match["round"])] = path
        return found

    def earlier(self, stage: str, round_: int) -> dict[str, torch.Tensor]:
        """The state after the latest round of `stage` before `round_`; {} (a fresh Adam) if none."""
        import torch

        kept = {r: path for r, path in self.rounds(stage).items() if r < round_}
        if not kept:
            return {}
        path = kept[max(kept)]
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
            # as server/checkpoint.py's load_checkpoint catches; only the error's kind is shown:
            # torch's own text advises loading without weights_only, never right for a site's file
            raise FederationError(
                f"this site's optimizer state {path} cannot be read ({type(error).__name__}); "
                f"delete {self.run_dir} to train this run's next rounds with a fresh optimizer"
            ) from error

    def keep(self, stage: str, round_: int, state: dict[str, torch.Tensor]) -> None:
        """Keep the state after `round_`; drop what no round can start from any more."""
        import torch

        self.run_dir.mkdir(parents=True, exist_ok=True)
        target = self.run_dir / f"{stage}-round-{round_}.pt"
        partial = target.with_name(f".{target.name}.partial")
        torch.save(state, partial)
        os.replace(partial, target)  # a crash mid-write leaves the previous state, never half a file
        for r, path in self.rounds(stage).items():
            if r < round_ - 1:  # a rerun of this round needs the one before it, nothing older
                path.unlink(missing_ok=True)
        for other in self.folder.glob("run-*"):
            if other != self.run_dir and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
