"""Each virtual site anonymizes its own test split with the model in its local store.

This is what a hospital does after the federation: take the signed anonymizer the server sent
(`MODEL_STORE/current`), check its signature again, and run it on its images (Contract 3). The
outputs are grey PNGs under RUN/anonymized/<site>/, one per test image, plus `preview.png`
(originals above, anonymized below) to look at.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from privdiff.common.distribution import current_model
from privdiff.common.errors import FederationError
from privdiff.simulation.sites import PUBLIC_KEY_NAME

PREVIEW_IMAGES = 8


@dataclass(frozen=True)
class SiteAnonymization:
    site: str
    images: int
    seconds: float
    folder: Path


def _file_name(uid: str, index: int) -> str:
    safe = re.sub(r"[^0-9A-Za-z._-]", "_", uid)[:120]
    return f"{index:05d}_{safe}.png"


def anonymize_test_splits(
    site_dirs: list[Path], homes: list[Path], out_dir: Path, image_size: int, seed: int, progress: bool = True
) -> list[SiteAnonymization]:
    from tqdm.auto import tqdm

    from privdiff_core.anonymizer import Anonymizer, Conditions
    from privdiff_core.anonymizer.files import write_png
    from privdiff_core.data import open_dataset
    from privdiff_core.signing import load_public_key, verify_model

    results = []
    for site_dir, home in zip(site_dirs, homes, strict=True):
        model = current_model(home / "model-store")
        if model is None:
            raise FederationError(f"{site_dir.name}: no anonymizer in its model store (distribution failed?)")
        verify_model(model, load_public_key(home / PUBLIC_KEY_NAME))
        anonymizer = Anonymizer.load(model, device="cpu")
        data = open_dataset(site_dir, image_size, split="test", progress=progress).load_tensors(
            progress=False
        )
        started = time.perf_counter()
        batch = int(anonymizer.cfg.anonymize.batch_size)
        outputs = []
        for first in tqdm(
            range(0, len(data), batch),
            desc=f"anonymize {site_dir.name}",
            disable=not progress,
            leave=False,
            unit="batch",
        ):
            part = data.subset(range(first, min(first + batch, len(data))))
            outputs.append(
                anonymizer.anonymize(part.images, Conditions.from_samples(part), seed=seed + first)
            )
        anonymized = torch.cat(outputs)
        folder = out_dir / site_dir.name
        folder.mkdir(parents=True, exist_ok=True)
        for index, (image, uid) in enumerate(zip(anonymized, data.uids, strict=True)):
            write_png(image[0].numpy(), folder / _file_name(uid, index))
        shown = min(PREVIEW_IMAGES, len(data))
        preview = np.concatenate(
            [np.concatenate(list(t[:shown, 0].numpy()), axis=1) for t in (data.images, anonymized)], axis=0
        )
        write_png(preview, folder / "preview.png")
        results.append(SiteAnonymization(site_dir.name, len(data), time.perf_counter() - started, folder))
    return results
