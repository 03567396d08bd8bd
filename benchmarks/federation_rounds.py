"""Federated round cost: SecAgg+ vs plain FedAvg, for the tiny, demo and a ~50M-parameter model.

Every variant runs the real plan (server/workflow.py) in Flower's simulation engine with 3 sites
and 1 local step per round, so a round is almost all federation overhead: sending the global
state, SecAgg+'s four stages (key setup, key sharing, masked upload, unmasking) or plain FedAvg's
one, and aggregation. Round 1 (actor start-up) is not timed; the median of the others is.

Bytes per site per round are measured by a ClientApp mod on every message a site answers
(what it uploads) and receives: the size of the records in the message (`count_bytes`), next
to the expectation of 4 bytes per parameter (float32, plain) vs 8 (int64, SecAgg+).

    python benchmarks/federation_rounds.py --out benchmarks/results/federation_rounds.json
    python benchmarks/federation_rounds.py --models dense50m --rounds 4   # one model only
    python benchmarks/federation_rounds.py --models tiny --sites 10 --dropout 0.2   # 2 of 10 drop out

With --dropout, that fraction of the sites (rounded, at least one) fails in every round: under
SecAgg+ after key sharing (the server must rebuild their masks from the survivors' shares), in
plain FedAvg on the training message; min_sites is lowered so the round still counts. Each result
also holds the peak resident memory of this process during the run (the ServerApp and the
simulation driver; the virtual sites live in Ray worker processes) and the load average before and
after. benchmarks/site_scaling.py sweeps sites and dropout with this script's run_variant.

Models: tiny / demo = PrivDiff-Net's denoiser stage (its UNet and tokens; the frozen VAE travels
along) from configs/tiny.yaml / demo.yaml on synthetic sites; dense50m = 12 dense 2048x2048
layers (50.4M parameters), because the round cost depends on the parameter count, not on what
the network computes. Times drift on a shared machine: compare the ratio column.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from measure import load_average, peak_rss, reset_peak_rss, write_report
from omegaconf import DictConfig, OmegaConf
from torch import nn

import privdiff.server.secagg
from privdiff.common.task import PrivdiffTask
from privdiff.server.settings import federation_settings
from privdiff_core.config import load_config
from privdiff_core.signing import generate_signing_key

SITES = 3


class DenseTask:
    """A stack of dense layers with ~50M parameters and one cheap SGD step per round."""

    stages = ("autoencoder", "denoiser")

    def build_models(self, cfg: DictConfig) -> nn.Module:
        torch.manual_seed(0)
        width, depth = int(cfg.dense.width), int(cfg.dense.depth)
        return nn.ModuleDict(
            {
                "stem": nn.Linear(8, width),
                "body": nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(depth)]),
            }
        )

    def stage_state(self, models: nn.Module, stage: str) -> dict[str, torch.Tensor]:
        prefix = "stem." if stage == "autoencoder" else "body."
        return {k: v.detach().clone() for k, v in models.state_dict().items() if k.startswith(prefix)}

    def load_stage_state(self, models: nn.Module, stage: str, state: dict[str, torch.Tensor]) -> None:
        models.load_state_dict(state, strict=False)

    def load_site_data(self, site_dir: Path, cfg: DictConfig, cache_dir: Path | None) -> Any:
        return torch.randn(64, 8, generator=torch.Generator().manual_seed(len(site_dir.name)))

    def num_examples(self, data: Any) -> int:
        return int(data.shape[0])

    def local_train(self, models, stage, data, cfg, steps, seed, device, **options) -> dict[str, float]:
        # options (optimizer state, schedule span, pacing): a round's cost does not depend on them
        torch.manual_seed(seed)
        params = list(models["body"].parameters())
        optimizer = torch.optim.Adam(params, lr=1e-4)  # every weight moves: a realistic update
        loss = torch.zeros(())
        for _ in range(steps):
            loss = (models["body"](models["stem"](data[:8])) - 1.0).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return {"loss": float(loss.detach()), "examples": self.num_examples(data)}

    def save_anonymizer(self, models, cfg, folder: Path, metadata: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(
            json.dumps({"parameters": sum(p.numel() for p in models.parameters())})
        )


def _value_bytes(value: Any) -> int:
    if isinstance(value, bytes | str):
        return len(value.encode() if isinstance(value, str) else value)
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 8  # int, float, bool


def content_bytes(content: Any) -> int:
    """Payload bytes of a message: array data plus config/metric values (keys and framing aside)."""
    total = sum(record.count_bytes() for record in content.array_records.values())
    for records in (content.config_records, content.metric_records):
        total += sum(_value_bytes(v) for record in records.values() for v in record.values())
    return total


class ByteCounter:
    """ClientApp mod: bytes of every message a site receives and answers, appended to a file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __call__(self, msg, context, call_next):
        received = content_bytes(msg.content)
        reply = call_next(msg, context)
        sent = content_bytes(reply.content) if reply.has_content() else 0
        line = {
            "partition": int(context.node_config["partition-id"]),
            "type": msg.metadata.message_type,
            "group": msg.metadata.group_id,
            "received": received,
            "sent": sent,
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(line) + "\n")
        return reply


class DropOut:
    """ClientApp mod: the listed sites fail in every round, mid-round. Under SecAgg+ they fail on
    the masked-upload stage, after handing out their key shares (the costly case: the server
    rebuilds their masks); in plain FedAvg they fail on the training message itself."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = frozenset(partitions)

    def __call__(self, msg, context, call_next):
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

        site = int(context.node_config["partition-id"])
        if site in self.partitions and msg.metadata.message_type == "train":
            configs = msg.content.config_records
            stage = configs[RECORD_KEY_CONFIGS].get(Key.STAGE) if RECORD_KEY_CONFIGS in configs else None
            if stage in (None, Stage.COLLECT_MASKED_VECTORS):
                raise RuntimeError(f"site {site} dropped out (benchmark)")
        return call_next(msg, context)


def dropped_partitions(sites: int, dropout: float) -> set[int]:
    """round(dropout * sites) sites (at least one when dropout > 0), spread evenly over the ids."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    count = max(1, round(dropout * sites)) if dropout > 0 else 0
    if sites - count < 2:
        raise ValueError(f"dropout {dropout} of {sites} sites leaves fewer than 2 in a round")
    return {int(i * sites / count) for i in range(count)}


VARIANTS = {  # name -> (SecAgg+ on, its implementation)
    "plain": (False, "privdiff"),
    "secagg-flower": (True, "flower"),
    "secagg": (True, "privdiff"),
    "secagg-unchecked": (True, "privdiff"),  # without the impossible-sum check: what the check costs
}


def model_config(
    name: str,
    rounds: int,
    variant: str,
    sites: int = SITES,
    min_sites: int | None = None,
    device: str = "cpu",
    gpus_per_site: float = 0.0,
    overrides: Sequence[str] = (),
) -> DictConfig:
    base = "tiny" if name == "dense50m" else name
    secagg, implementation = VARIANTS[variant]
    cfg = load_config(
        base,
        [
            "federation.rounds.autoencoder=0",
            f"federation.rounds.denoiser={rounds}",
            "federation.local_steps.denoiser=1",
            f"federation.secagg.enabled={str(secagg).lower()}",
            f"federation.secagg.implementation={implementation}",
            f"federation.sites={sites}",
            f"federation.min_sites={sites if min_sites is None else min_sites}",
            "federation.validation.enabled=false",  # the gate runs once after the rounds: not a round cost
            f"federation.simulation.gpus_per_site={gpus_per_site}",
            f"device={device}",
            *overrides,  # last: they win (e.g. benchmarks/site_pacing.py's 55 local steps)
        ],
    )
    if name == "dense50m":
        cfg = OmegaConf.merge(cfg, {"dense": {"width": 2048, "depth": 12}})
    return cfg


def site_folders(name: str, cfg: DictConfig, root: Path, sites: int = SITES) -> list[Path]:
    if name == "dense50m":
        folders = [root / f"site_{i:02d}" for i in range(sites)]
        for site in folders:
            site.mkdir(parents=True, exist_ok=True)
        return folders
    from privdiff_core.synth import SynthParams, generate_federation

    data = root / f"federation-{cfg.image_size}-{sites}"
    if not data.is_dir():
        generate_federation(
            data,
            SynthParams(sites=sites, patients=8, images_per_patient=2, size=cfg.image_size),
            progress=False,
        )
    return sorted(p for p in data.iterdir() if p.is_dir())


def run_variant(
    name: str,
    variant: str,
    rounds: int,
    work: Path,
    sites: int = SITES,
    dropout: float = 0.0,
    device: str = "cpu",
    gpus_per_site: float = 0.0,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    from privdiff.simulation.engine import run_federation

    dropping = dropped_partitions(sites, dropout)
    cfg = model_config(name, rounds, variant, sites, sites - len(dropping), device, gpus_per_site, overrides)
    secagg = VARIANTS[variant][0]
    task = DenseTask() if name == "dense50m" else PrivdiffTask()
    models = task.build_models(cfg)
    parameters = sum(t.numel() for t in task.stage_state(models, "denoiser").values())
    frozen = sum(t.numel() for t in task.stage_state(models, "autoencoder").values())
    del models
    out = work / f"{name}-{variant}-{sites}-{len(dropping)}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generate_signing_key(out / "sign.pem", out / "sign.pub")
    folders = site_folders(name, cfg, work / "data", sites)
    homes = [out / "homes" / s.name for s in folders]  # no public key: the benchmark ships no model
    for home in homes:
        home.mkdir(parents=True)
    counter = out / "bytes.jsonl"
    mods = [ByteCounter(counter), *([DropOut(dropping)] if dropping else [])]
    load_before = load_average()
    resident = reset_peak_rss()
    started = time.perf_counter()
    # the server runs in this process: the unchecked variant swaps the check for a no-op
    unchecked = mock.patch.object(privdiff.server.secagg, "check_unmasked_sum", lambda *args: None)
    with unchecked if variant == "secagg-unchecked" else contextlib.nullcontext():
        run_federation(
            cfg,
            federation_settings(cfg),
            task,
            out,
            folders,
            homes,
            out / "sign.pem",
            extra_client_mods=mods,
            progress=lambda line: print(f"    {line}", flush=True),
        )
    total = time.perf_counter() - started
    peak = peak_rss()
    history = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
    timed = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
    messages = [json.loads(line) for line in counter.read_text().splitlines()]
    trained = [m for m in messages if m["type"] == "train" and m["group"] == str(rounds)]  # the last round
    survivors = [p for p in range(sites) if p not in dropping]  # a dropped site's answers never arrive
    per_site_sent = statistics.mean(sum(m["sent"] for m in trained if m["partition"] == p) for p in survivors)
    per_site_received = statistics.mean(
        sum(m["received"] for m in trained if m["partition"] == p) for p in survivors
    )
    return {
        "model": name,
        "variant": variant,
        "loadavg_after": os.getloadavg(),  # a shared machine: how busy it was
        "secagg": secagg,
        "sites": sites,
        "dropout": dropout,
        "dropped_sites": sorted(dropping),
        "dropped_per_round": [h.get("dropped", 0) for h in history],
        "sites_per_round": [h.get("sites") for h in history],
        "num_shares": federation_settings(cfg).secagg.shares_for(sites)[0] if secagg else None,
        "parameters": parameters,
        "frozen_parameters": frozen,
        "round_s_median": statistics.median(timed),
        "round_s": timed,
        "run_s": total,
        "sent_bytes_per_site": per_site_sent,
        "received_bytes_per_site": per_site_received,
        # float32 plain, int64 in Flower's SecAgg+, uint32 in privdiff's vector path
        "expected_sent_bytes": parameters * (8 if variant == "secagg-flower" else 4),
        "server_resident_before_mb": resident / 1e6,
        "server_peak_rss_mb": peak / 1e6,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "device": device,
    }


def overhead(by: dict[str, dict[str, Any]]) -> str:
    """Round time of privdiff's SecAgg+ with the impossible-sum check over without it."""
    if "secagg" not in by or "secagg-unchecked" not in by:
        return "-"
    return f"{by['secagg']['round_s_median'] / by['secagg-unchecked']['round_s_median'] - 1:+.1%}"


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| model | sites | dropout | parameters | plain round (s) | SecAgg+ Flower stock (s) | "
        "SecAgg+ privdiff (s) | "
        "stock / plain | privdiff / plain | sent/site plain (MB) | sent/site stock (MB) | "
        "sent/site privdiff (MB) | privdiff without sum check (s) | check overhead |",
        "|" + "---|" * 14,
    ]
    for name, sites, dropout in dict.fromkeys((r["model"], r["sites"], r["dropout"]) for r in results):
        by = {
            r["variant"]: r
            for r in results
            if (r["model"], r["sites"], r["dropout"]) == (name, sites, dropout)
        }
        if "plain" not in by:
            continue
        plain = by["plain"]

        def cell(variant: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}", by: dict = by) -> str:
            return fmt.format(by[variant][key] / scale) if variant in by else "-"

        def ratio(variant: str, by: dict = by, plain: dict = plain) -> str:
            return f"{by[variant]['round_s_median'] / plain['round_s_median']:.2f}x" if variant in by else "-"

        rows.append(
            f"| {name} | {sites} | {dropout:.0%} | {plain['parameters'] / 1e6:.2f}M | "
            f"{cell('plain', 'round_s_median')} | "
            f"{cell('secagg-flower', 'round_s_median')} | {cell('secagg', 'round_s_median')} | "
            f"{ratio('secagg-flower')} | {ratio('secagg')} | "
            f"{cell('plain', 'sent_bytes_per_site', 1e6, '{:.1f}')} | "
            f"{cell('secagg-flower', 'sent_bytes_per_site', 1e6, '{:.1f}')} | "
            f"{cell('secagg', 'sent_bytes_per_site', 1e6, '{:.1f}')} | "
            f"{cell('secagg-unchecked', 'round_s_median')} | {overhead(by)} |"
        )
    return "\n".join(rows)


def write_results(out: Path, results: list[dict[str, Any]]) -> None:
    """The JSON and the Markdown table (measure.write_report: atomic)."""
    payload = {
        "machine": platform.platform(),
        "sites": sorted({r["sites"] for r in results}),
        "results": results,
        "goal": "SecAgg+ round <= 1.5x plain at ~50M parameters",
    }
    write_report(out, payload, table(results))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="tiny,demo,dense50m", help="comma-separated: tiny, demo, dense50m"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds per variant; the first is not timed")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--sites", type=int, default=SITES, help=f"virtual sites (default {SITES})")
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="fraction of sites that fail mid-round (default 0)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/federation_rounds.json"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    try:
        dropped_partitions(args.sites, args.dropout)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="federation-rounds-"))
    results = []
    for name in args.models.split(","):
        for variant in args.variants.split(","):  # all variants of a model back to back: drift hits all
            print(f"== {name}, {variant}", flush=True)
            results.append(run_variant(name, variant, args.rounds, work, args.sites, args.dropout))
            write_results(args.out, results)  # after every variant: an interrupted run keeps what it measured
    print(table(results))
    print(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
