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
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import server.secagg
from privdiff_core.config import load_config
from privdiff_core.signing import generate_signing_key
from server.settings import federation_settings
from server.task import PrivdiffTask

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

    def local_train(
        self, models, stage, data, cfg, steps, seed, device, optimizer_state=None
    ) -> dict[str, float]:
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


VARIANTS = {  # name -> (SecAgg+ on, its implementation)
    "plain": (False, "privdiff"),
    "secagg-flower": (True, "flower"),
    "secagg": (True, "privdiff"),
    "secagg-unchecked": (True, "privdiff"),  # without the impossible-sum check: what the check costs
}


def model_config(name: str, rounds: int, variant: str) -> DictConfig:
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
            f"federation.sites={SITES}",
            f"federation.min_sites={SITES}",
            "federation.validation.enabled=false",  # the gate runs once after the rounds: not a round cost
            "device=cpu",
        ],
    )
    if name == "dense50m":
        cfg = OmegaConf.merge(cfg, {"dense": {"width": 2048, "depth": 12}})
    return cfg


def site_folders(name: str, cfg: DictConfig, root: Path) -> list[Path]:
    if name == "dense50m":
        sites = [root / f"site_{i:02d}" for i in range(SITES)]
        for site in sites:
            site.mkdir(parents=True, exist_ok=True)
        return sites
    from privdiff_core.synth import SynthParams, generate_federation

    data = root / f"federation-{cfg.image_size}"
    if not data.is_dir():
        generate_federation(
            data,
            SynthParams(sites=SITES, patients=8, images_per_patient=2, size=int(cfg.image_size)),
            progress=False,
        )
    return sorted(p for p in data.iterdir() if p.is_dir())


def run_variant(name: str, variant: str, rounds: int, work: Path) -> dict[str, Any]:
    from simulation.engine import run_federation

    cfg = model_config(name, rounds, variant)
    secagg = VARIANTS[variant][0]
    task = DenseTask() if name == "dense50m" else PrivdiffTask()
    models = task.build_models(cfg)
    parameters = sum(t.numel() for t in task.stage_state(models, "denoiser").values())
    frozen = sum(t.numel() for t in task.stage_state(models, "autoencoder").values())
    del models
    out = work / f"{name}-{variant}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    generate_signing_key(out / "sign.pem", out / "sign.pub")
    sites = site_folders(name, cfg, work / "data")
    homes = [out / "homes" / s.name for s in sites]  # no public key: the benchmark ships no model
    for home in homes:
        home.mkdir(parents=True)
    counter = out / "bytes.jsonl"
    started = time.perf_counter()
    # the server runs in this process: the unchecked variant swaps the check for a no-op
    unchecked = mock.patch.object(server.secagg, "check_unmasked_sum", lambda *args: None)
    with unchecked if variant == "secagg-unchecked" else contextlib.nullcontext():
        run_federation(
            cfg,
            federation_settings(cfg),
            task,
            out,
            sites,
            homes,
            out / "sign.pem",
            extra_client_mods=[ByteCounter(counter)],
            progress=lambda line: print(f"    {line}", flush=True),
        )
    total = time.perf_counter() - started
    history = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
    timed = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
    messages = [json.loads(line) for line in counter.read_text().splitlines()]
    trained = [m for m in messages if m["type"] == "train" and m["group"] == str(rounds)]  # the last round
    per_site_sent = statistics.mean(
        sum(m["sent"] for m in trained if m["partition"] == p) for p in range(SITES)
    )
    per_site_received = statistics.mean(
        sum(m["received"] for m in trained if m["partition"] == p) for p in range(SITES)
    )
    return {
        "model": name,
        "variant": variant,
        "loadavg_after": os.getloadavg(),  # a shared machine: how busy it was
        "secagg": secagg,
        "parameters": parameters,
        "frozen_parameters": frozen,
        "round_s_median": statistics.median(timed),
        "round_s": timed,
        "run_s": total,
        "sent_bytes_per_site": per_site_sent,
        "received_bytes_per_site": per_site_received,
        # float32 plain, int64 in Flower's SecAgg+, uint32 in privdiff's vector path
        "expected_sent_bytes": parameters * (8 if variant == "secagg-flower" else 4),
    }


def overhead(by: dict[str, dict[str, Any]]) -> str:
    """Round time of privdiff's SecAgg+ with the impossible-sum check over without it."""
    if "secagg" not in by or "secagg-unchecked" not in by:
        return "-"
    return f"{by['secagg']['round_s_median'] / by['secagg-unchecked']['round_s_median'] - 1:+.1%}"


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| model | parameters | plain round (s) | SecAgg+ Flower stock (s) | SecAgg+ privdiff (s) | "
        "stock / plain | privdiff / plain | sent/site plain (MB) | sent/site stock (MB) | "
        "sent/site privdiff (MB) | privdiff without sum check (s) | check overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["model"] for r in results):
        by = {r["variant"]: r for r in results if r["model"] == name}
        if "plain" not in by:
            continue
        plain = by["plain"]

        def cell(variant: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}", by: dict = by) -> str:
            return fmt.format(by[variant][key] / scale) if variant in by else "-"

        def ratio(variant: str, by: dict = by, plain: dict = plain) -> str:
            return f"{by[variant]['round_s_median'] / plain['round_s_median']:.2f}x" if variant in by else "-"

        rows.append(
            f"| {name} | {plain['parameters'] / 1e6:.2f}M | {cell('plain', 'round_s_median')} | "
            f"{cell('secagg-flower', 'round_s_median')} | {cell('secagg', 'round_s_median')} | "
            f"{ratio('secagg-flower')} | {ratio('secagg')} | "
            f"{cell('plain', 'sent_bytes_per_site', 1e6, '{:.1f}')} | "
            f"{cell('secagg-flower', 'sent_bytes_per_site', 1e6, '{:.1f}')} | "
            f"{cell('secagg', 'sent_bytes_per_site', 1e6, '{:.1f}')} | "
            f"{cell('secagg-unchecked', 'round_s_median')} | {overhead(by)} |"
        )
    return "\n".join(rows)


def write_results(out: Path, results: list[dict[str, Any]]) -> None:
    """The JSON and the Markdown table, each written to a temporary name and renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": platform.platform(),
        "sites": SITES,
        "results": results,
        "goal": "SecAgg+ round <= 1.5x plain at ~50M parameters",
    }
    for path, text in ((out, json.dumps(payload, indent=2)), (out.with_suffix(".md"), table(results) + "\n")):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


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
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/federation_rounds.json"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="federation-rounds-"))
    results = []
    for name in args.models.split(","):
        for variant in args.variants.split(","):  # all variants of a model back to back: drift hits all
            print(f"== {name}, {variant}", flush=True)
            results.append(run_variant(name, variant, args.rounds, work))
            write_results(args.out, results)  # after every variant: an interrupted run keeps what it measured
    print(table(results))
    print(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
