"""What `privdiff evaluate` can evaluate: a trained anonymizer, the baselines, trivial references.

Every method turns a cohort's images into anonymized images of the same shape in [-1, 1].
Methods that learn (the deformation baseline) learn from the training split only, in `prepare`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from privdiff_core.errors import PrivdiffError

from .attackers import AttackerSettings
from .baselines.deformation import DeformationAnonymizer, DeformationSettings, train_deformation
from .baselines.dp_pix import dp_pix
from .protocol import Cohort, EvalSplits, derive_seed
from .results import PrivacyBudget

BUILTIN_METHODS = ("identity", "noise", "dp_pix", "deformation", "oracle", "vae")
CONDITION_MODES = ("none", "sensitive", "all")
# A model evaluated under conditions other than the config's evaluate.anonymizer_conditions is
# named NAME_<suffix> and labelled with what it was told.
CONDITION_SUFFIXES = {"none": "blind", "sensitive": "estimated", "all": "reports"}
CONDITION_LABELS = {
    "none": "told nothing",
    "sensitive": "findings estimated from the film",
    "all": "findings from the reports",
}
ANONYMIZE_MODES = ("img2img", "generative")


class MethodError(PrivdiffError, ValueError):
    """An unknown method name or a model folder that cannot be evaluated."""


@dataclass
class Method:
    """Base class: `name` keys the report, `label` is what a reader sees, `kind` groups the tables."""

    name: str
    label: str
    kind: str  # "reference" | "baseline" | "model"
    settings: dict = field(default_factory=dict)

    def prepare(self, splits: EvalSplits, device: str, progress: bool, workdir: Path | None) -> None:
        """Learn whatever the method learns, from `splits.train` only (default: nothing)."""

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        raise MethodError(f"method {self.name!r} cannot anonymize")

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "kind": self.kind, "settings": self.settings}


class IdentityMethod(Method):
    """Returns its input: the 'no anonymization' reference (re-ID must stay at the real level)."""

    def __init__(self) -> None:
        super().__init__("identity", "Identity (no anonymization, sanity check)", "reference")

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        return cohort.images.clone()


class NoiseMethod(Method):
    """Uniform noise independent of the input: the floor (re-ID and diagnosis must fall to 0.5)."""

    def __init__(self) -> None:
        super().__init__("noise", "Pure noise (sanity check)", "reference")

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.rand(cohort.images.shape, generator=gen) * 2.0 - 1.0


class DPPixMethod(Method):
    def __init__(self, b: int, m: float, eps: float) -> None:
        super().__init__(
            "dp_pix", f"DP-Pix (b={b}, m={m:g}, eps={eps:g})", "baseline", {"b": b, "m": m, "eps": eps}
        )

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        s = self.settings
        return dp_pix(cohort.images, s["b"], s["m"], s["eps"], seed)


class DeformationMethod(Method):
    def __init__(self, settings: DeformationSettings, nets: AttackerSettings) -> None:
        super().__init__(
            "deformation",
            f"Deformation (PriCheXy-Net style, mu={settings.mu:g})",
            "baseline",
            dict(settings.__dict__),
        )
        self._settings, self._nets = settings, nets
        self.model: DeformationAnonymizer | None = None
        self.training_log: dict = {}
        self.device = "cpu"

    def prepare(self, splits: EvalSplits, device: str, progress: bool, workdir: Path | None) -> None:
        from safetensors.torch import load_file, save_file

        self.device = device
        s = self._settings
        cache = workdir / f"deformation_{self.cache_key(splits)}.safetensors" if workdir else None
        if cache is not None and cache.is_file():
            self.model = DeformationAnonymizer(s.mu, s.base_width, s.smooth_kernel, s.smooth_sigma)
            self.model.load_state_dict(load_file(cache))
            log_file = cache.with_suffix(".json")
            self.training_log = json.loads(log_file.read_text()) if log_file.is_file() else {}
            return
        self.model, self.training_log = train_deformation(splits.train, s, self._nets, device, progress)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.tmp{os.getpid()}")
            save_file(self.model.state_dict(), tmp)
            tmp.replace(cache)
            cache.with_suffix(".json").write_text(json.dumps(self.training_log))

    def cache_key(self, splits: EvalSplits) -> str:
        """The trained generator depends on the training data, every setting and the adversaries' shape."""
        material = json.dumps(
            {"data": splits.train.fingerprint(), "settings": self.settings, "nets": self._nets.__dict__},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        if self.model is None:
            raise MethodError("the deformation baseline must be trained (prepare) before it anonymizes")
        return self.model.anonymize(cohort.images, device=self.device)

    def describe(self) -> dict:
        return {**super().describe(), "training": self.training_log}


def resolve_anonymizer_folder(path: str | Path) -> Path:
    """An anonymizer folder (has manifest.json), or a `privdiff train` run folder holding one."""
    from privdiff_core.anonymizer import find_model_folder
    from privdiff_core.model.folder import MANIFEST_FILE

    path = Path(path)
    if not path.exists():
        raise MethodError(f"model {str(path)!r} does not exist")
    folder = find_model_folder(path)
    if not (folder / MANIFEST_FILE).is_file():
        raise MethodError(
            f"{path} is neither an anonymizer folder (no {MANIFEST_FILE}) nor a training run holding one in "
            "anonymizer/; pass the folder written by `privdiff train`"
        )
    return folder


# What a trained model runs ((sas.enabled, spg.enabled) of its config), named as in the paper's
# ablation (Table 2).
ARCHITECTURE_LABELS = {
    (False, False): "Vanilla diffusion",
    (True, False): "Diffusion + SAS",
    (False, True): "Diffusion + SPG",
    (True, True): "PrivDiff-Net (SAS + SPG)",
}


class AnonymizerMethod(Method):
    """A trained PrivDiff-Net folder (Contract 3), run batch-wise with a progress bar.

    `conditions`: which known attributes the anonymizer is given. "sensitive" (default) passes
    age group and sex, as a site would read them from the DICOM header; the findings are never
    passed then, so the diagnosis AUC cannot be inflated by the anonymizer painting in the test
    labels it was told. "none" lets the anonymizer estimate everything from the image; "all"
    also passes the findings (say so when you report it).
    """

    def __init__(
        self,
        name: str,
        label: str,
        folder: str | Path,
        conditions: str,
        batch_size: int,
        strength: float | None = None,
        mode: str | None = None,
        model_name: str | None = None,
    ) -> None:
        if conditions not in CONDITION_MODES:
            raise MethodError(f"anonymizer conditions must be one of {CONDITION_MODES}, got {conditions!r}")
        if strength is not None and not 0.0 < strength <= 1.0:
            raise MethodError(f"anonymize strength must be in (0, 1], got {strength}")
        if mode is not None and mode not in ANONYMIZE_MODES:
            raise MethodError(f"anonymize mode must be one of {ANONYMIZE_MODES}, got {mode!r}")
        self.folder = resolve_anonymizer_folder(folder)
        settings = {"folder": str(self.folder), "conditions": conditions, "batch_size": batch_size}
        # Absent, not None, by default: earlier cached results stay valid, and a model that knows
        # no modes is never handed the keyword.
        if strength is not None:
            settings["strength"] = float(strength)
        if mode is not None:
            settings["mode"] = mode
        super().__init__(name, label, "model", settings)
        # The frontier figure joins the strengths of one model in one mode into a curve.
        self.curve = f"{model_name or name}/{mode or 'default'}"
        self.anonymizer = None
        self.manifest: dict = json.loads((self.folder / "manifest.json").read_text())

    @property
    def architecture(self) -> tuple[bool, bool]:
        """(SAS on, SPG on) of the model's training config; a config without the keys is PrivDiff-Net."""
        config = self.manifest.get("config", {})
        sas, spg = config.get("sas", {}), config.get("spg", {})
        return bool(sas.get("enabled", True)), bool(spg.get("enabled", True))

    def prepare(self, splits: EvalSplits, device: str, progress: bool, workdir: Path | None) -> None:
        self.anonymizer = load_anonymizer(self.folder, device, splits.test.image_size)

    def _conditions(self, cohort: Cohort, index: slice):
        mode = self.settings["conditions"]
        if mode == "none":
            return None
        from privdiff_core.anonymizer import Conditions

        # "sensitive": findings unknown, the anonymizer estimates them from the image
        return Conditions.from_samples(cohort, findings_told=mode == "all").index(index)

    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        if self.anonymizer is None:
            raise MethodError("the anonymizer must be loaded (prepare) before it anonymizes")
        batch = int(self.settings["batch_size"])
        out = []
        bar = tqdm(
            range(0, len(cohort), batch), desc=f"anonymize ({self.name})", disable=not progress, leave=False
        )
        for k in bar:
            index = slice(k, k + batch)
            images = cohort.images[index]
            seeds = [derive_seed(seed, k + i) for i in range(len(images))]  # per image, batch-independent
            extra = {"mode": self.settings["mode"]} if "mode" in self.settings else {}
            out.append(
                self.anonymizer.anonymize(
                    images,
                    conditions=self._conditions(cohort, index),
                    seed=seeds,
                    strength=self.settings.get("strength"),  # None: the model's own anonymize.strength
                    **extra,
                )
            )
        return torch.cat(out).float().clamp(-1.0, 1.0)

    @property
    def privacy_budget(self) -> PrivacyBudget:
        """The differential-privacy budget its training stated in the manifest's metadata (a
        federated DP run writes epsilon at delta; server/privacy.py), for the report."""
        metadata = self.manifest.get("metadata") or {}
        privacy, dp = metadata.get("privacy"), metadata.get("dp")
        if isinstance(privacy, dict) and privacy.get("epsilon") is not None:
            keys = ("epsilon", "delta", "max_epsilon", "budget_spent")
            return PrivacyBudget(dp=True, **{k: privacy[k] for k in keys if k in privacy})
        if isinstance(dp, dict) and dp.get("enabled") is False:
            return PrivacyBudget(dp=False)
        return PrivacyBudget(dp=None)  # not stated: a centrally trained model says nothing about DP

    def describe(self) -> dict:
        keep = {k: self.manifest[k] for k in ("versions", "hashes", "config") if k in self.manifest}
        return {**super().describe(), "manifest": keep, "curve": self.curve, "privacy": self.privacy_budget}


def load_anonymizer(folder: Path, device: str, image_size: int):
    """The `Anonymizer` of a folder, refused when it works at another image size than the data."""
    from privdiff_core.anonymizer import Anonymizer

    anonymizer = Anonymizer.load(folder, device=device)
    if anonymizer.image_size != image_size:
        raise MethodError(
            f"{folder} anonymizes {anonymizer.image_size}px images but the evaluation data is "
            f"{image_size}px; set image_size={anonymizer.image_size}"
        )
    return anonymizer


class VAEMethod(Method):
    """Reconstruction only: each image through the anonymizer folder's VAE (encode, decode).

    No noise, no denoiser, no conditions: what the autoencoder alone keeps of identity and of the
    findings. An anonymizer cannot keep more detail than this, nor (at small strengths) hide more.
    """

    def __init__(self, name: str, label: str, folder: str | Path, batch_size: int) -> None:
        self.folder = resolve_anonymizer_folder(folder)
        super().__init__(name, label, "reference", {"folder": str(self.folder), "batch_size": batch_size})
        self.anonymizer = None

    def prepare(self, splits: EvalSplits, device: str, progress: bool, workdir: Path | None) -> None:
        self.anonymizer = load_anonymizer(self.folder, device, splits.test.image_size)

    @torch.no_grad()
    def anonymize(self, cohort: Cohort, seed: int, progress: bool = True) -> torch.Tensor:
        if self.anonymizer is None:
            raise MethodError("the VAE must be loaded (prepare) before it reconstructs")
        models, batch = self.anonymizer.models, int(self.settings["batch_size"])
        bar = tqdm(
            range(0, len(cohort), batch), desc=f"reconstruct ({self.name})", disable=not progress, leave=False
        )
        return torch.cat([models.reconstruct(cohort.images[k : k + batch], batch) for k in bar])


def builtin_method(name: str, cfg) -> Method:
    """A baseline or reference by name, with its settings from the config's `baselines` section."""
    if name == "identity":
        return IdentityMethod()
    if name == "noise":
        return NoiseMethod()
    if name == "dp_pix":
        s = cfg.baselines.dp_pix
        return DPPixMethod(int(s.b), float(s.m), float(s.eps))
    if name == "deformation":
        nets = AttackerSettings.from_config(cfg.evaluate.classifier)
        return DeformationMethod(
            DeformationSettings.from_config(cfg.baselines.deformation, seed=cfg.seed), nets
        )
    if name in ("oracle", "vae"):
        raise MethodError(f"{name!r} needs the data folder or a --model; use reference_methods")
    raise MethodError(f"unknown method {name!r}; built-in methods: {', '.join(BUILTIN_METHODS)}")
