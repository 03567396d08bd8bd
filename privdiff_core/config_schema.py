"""The typed schema of a privdiff config: every key, its type and its default.

`load_config` merges a config file onto `PrivdiffConfig`, so a wrong type or an unknown key fails
at load time and names the key. The defaults are the `tiny` scale (every stage trains in seconds
on 2 CPU cores; numbers mean nothing): `configs/tiny.yaml` is the defaults as they are, and
`configs/demo.yaml` / `configs/paper.yaml` list only what they scale up. A key belongs here
before any code reads it; code then reads `cfg.section.key` without casts. A fallback stays only
where a model folder saved before its key existed must keep its behaviour (`spg.negative`,
`anonymize.mode`): stored configs are read as written (`config.stored_config`).

Values that are "auto" or a number stay a union (`int | str`): server/settings.py checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ---- the run


@dataclass
class SynthConfig:
    """`privdiff synth`: synthetic hospitals (privdiff_core.synth)."""

    sites: int = 2
    patients: int = 12
    images_per_patient: int = 3
    size: int = 32
    seed: int = 0


# ---- PrivDiff-Net model, training and anonymization (privdiff_core/model, training, anonymizer)


@dataclass
class VAEConfig:
    # widths per level; downsampling 2^(levels-1) = 4 -> 8x8 latent at 32 px
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8  # must divide every width
    pretrained: str | None = None  # a local diffusers AutoencoderKL folder (1 channel) to start from
    kl_weight: float = 1.0e-4  # on the KL per latent element; reconstruction comes first
    edge_weight: float = 0.5  # L1 on image gradients: keeps rib and heart edges sharp
    # on 1 - SSIM (local structure). Demo, 0.5 with 3x the VAE steps: SSIM 0.87 but the denoiser,
    # same steps, kept less diagnosis (benchmarks/results/main_job_frontier_ssim_autoencoder.md)
    ssim_weight: float = 0.0
    # recompute each block's activations in the backward pass instead of keeping them: the same
    # gradients for ~1/3 more autoencoder compute. Paper config, one autoencoder-stage step on the
    # CPU: 2.78 GB per film of the batch without, 0.94 GB with (benchmarks/training_memory.py); at
    # its batch of 32 that stage ran out of an 80 GB H100 (gpu_lease_h100_2026-12-05.json)
    gradient_checkpointing: bool = False


@dataclass
class EncoderConfig:
    """Attribute encoder: identity embedding + age/sex/finding heads."""

    backbone: str = "small"  # small | resnet50 | densenet121 (privdiff_core.nets)
    widths: list[int] | None = field(default_factory=lambda: [16, 32, 32, 32])  # small backbone only
    embed_dim: int = 32  # identity embedding size (input of the identity tokens)
    lr: float = 1.0e-3
    pairs_per_step: int = 16  # same/different-patient pairs per step for the verifier BCE
    # images per step for the age/sex/finding heads (their own batch: on the VAE's batch the
    # finding head stayed at chance; it picks the generative mode's findings)
    attribute_batch: int = 16
    augment: bool = True  # shifted / re-exposed attribute batches (as the diagnosis judge)
    # the findings get their own network, trained in the denoiser stage (which has the steps);
    # false: a head on the backbone shared with age and sex, trained in the autoencoder stage
    findings_network: bool = False
    # the findings network's own widths and batch (null: `widths`, `attribute_batch`). It sees few
    # films in the denoiser stage's steps; a narrower network on a larger batch sees more for the
    # same time (benchmarks/findings_estimator_budget.py)
    findings_widths: list[int] | None = None
    findings_batch: int | None = None
    # Adam steps of the findings network per denoiser step, each on its own findings_batch films:
    # it learns per step (demo, the stage emulated: 2 steps of 48 films test AUC 0.763 against 1 of
    # 96's 0.742 for the same films and a cheaper step; benchmarks/results/
    # findings_estimator_steps_session23.md, stage_step_cost_session24.md; configs/demo.yaml)
    findings_steps: int = 1
    # the findings network's pooling (small backbone: nets.SmallConvNet.pool_grid): 1 averages its
    # last features over the film; G > 1 over each cell of a G x G grid, keeping where they are.
    # Demo: 8 read test films better (0.840 against 0.746) but its films kept less diagnosis
    # (0.588 against 0.630; benchmarks/results/main_job_frontier_pool_grid_session25.md)
    findings_pool_grid: int = 1
    # how often an estimated finding is called present (privdiff_net.measure_finding_thresholds):
    # "youden" (Youden's threshold) or "prevalence" (in the share of training films that have it;
    # demo and paper: Youden called 3x as many findings per film, which drew unlike films)
    finding_calls: str = "youden"


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    # cross-attention (SAS) per level; the mid block always has it
    attention: list[bool] = field(default_factory=lambda: [True, True])
    layers_per_block: int = 1
    heads: int = 4  # attention heads; head dim = width / heads
    norm_num_groups: int = 8


@dataclass
class ConditioningConfig:
    embed_dim: int = 32  # size of every category token (paper: 256)
    identity_tokens: int = 2  # L_id; age, sex and diagnosis have 4, 2 and 14 (one per class)
    dropout: float = 0.1  # when SPG is off: each category dropped alone with this probability,
    joint_dropout: float = 0.15  #  all at once (trains eps(z, 0), which guidance subtracts),
    diagnosis_only: float = 0.15  #  all but the findings (the generative mode's condition)
    finding_states: str = "shared"  # "per_finding": the shared present/absent/unknown states plus an
    #  offset per finding, starting at zero (model/conditioning.py CategoryTokens). Demo, one training
    #  each, 3 runs: diagnosis estimated 0.616 +- 0.010 / told 0.680 +- 0.012 against shared 0.608 +-
    #  0.007 / 0.678 +- 0.024, FD told 12.5 against 2.7: no gain (main_job_frontier_finding_states.md).
    #  Per-finding states alone (no shared part) learn "present" from one finding's films: 0.541 / 0.573
    #  at the demo's budget, though they alone drew emphysema (lucent) as the judge reads it (0.61 vs 0.32)


@dataclass
class SASConfig:
    enabled: bool = True  # false: standard cross-attention over all tokens (ablation)
    eps: float = 1.0e-4  # ridge of (F_s^T F_s + eps I), relative to mean(diag F_s^T F_s)
    keep_mean: bool = False  # true: project off the sensitive maps minus their spatial mean (sas.py)


@dataclass
class SPGConfig:
    enabled: bool = True  # false: plain denoising loss, CFG sampling with w_diag (ablation)
    w_diag: float = 2.0  # > 1 amplifies the diagnosis
    w_s: float = -1.0  # < 0 pushes away from the sensitive attribute s
    # push away from eps(diag+s) - eps(diag); paper: eps(s) - eps(0), which also pushes away
    # from 'no findings' (eps(s) has the diagnosis nulled)
    negative: str = "diagnosis"
    # lambda of L_SPG beside L_simple (paper: 1). 0: fitting eps_p to the noise of a film that
    # still shows its identity pulls eps_p towards that identity
    weight: float = 0.0


@dataclass
class DiffusionConfig:
    train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"  # latent-diffusion schedule (diffusers DDPMScheduler)
    beta_start: float = 0.00085
    beta_end: float = 0.012


@dataclass
class AutoencoderStageConfig:
    steps: int | None = 40  # null: use epochs
    epochs: int | None = None
    lr: float = 2.0e-3  # VAE learning rate (the encoder uses encoder.lr)
    # the attribute encoder (verifier, age/sex heads) learns on every k-th step, the VAE on each:
    # the VAE needs far more steps to reconstruct well (demo, one core: a VAE step 0.19 s, the
    # encoder's part of a step 0.13 s more)
    encoder_every: int = 1
    # films per VAE step (null: train.batch_size). Demo, the federated stage emulated: smaller
    # batches and more steps reconstruct better in the same time (benchmarks/federated_autoencoder.py)
    batch_size: int | None = None
    lr_schedule: str = "constant"  # or "cosine": every lr of the stage decays to lr_final x itself
    lr_final: float = 0.1  #  over its steps (federated: over all its rounds, see training.lr_factor)
    reuse: str | None = None  # an anonymizer/run folder whose trained autoencoder stage is reused (skip it)


@dataclass
class DenoiserStageConfig:
    steps: int | None = 40
    epochs: int | None = None
    lr: float = 1.0e-3
    # as train.autoencoder.lr_schedule. Measured on the demo federation (one light evaluation, same
    # judges, findings told): cosine to 0.1 drew diagnosis AUC 0.570 / FD 12.7 against constant's
    # 0.631 / 10.0 (benchmarks/results/federated_denoiser_demo.md): the decay costs more progress
    # than it smooths, at 6 x 110 steps; kept for longer (GPU) runs
    lr_schedule: str = "constant"
    lr_final: float = 0.1
    # the UNet's forward on a CPU: "float32", "bfloat16" (its weights, the findings network and
    # SAS stay float32) or "auto" = bfloat16 where the CPU multiplies it itself (AVX512-BF16 or AMX;
    # elsewhere bfloat16 is emulated and slower than float32). CUDA always trains the UNet in
    # bfloat16 (training/precision.py). Demo main job, AMD EPYC: denoiser rounds 540 s against 657 s
    cpu_precision: str = "float32"


@dataclass
class TrainConfig:
    batch_size: int = 8
    checkpoint_every: int = 10  # steps between checkpoints of `privdiff train`
    val_batches: int = 2  # batches of the val split for a val loss per stage (0: none)
    val_every: int = 0  # steps between val losses (metrics.json val_history: the curve); 0: at the end only
    latent_stats_images: int = 256  # images used to measure the latent shift and scale
    autoencoder: AutoencoderStageConfig = field(default_factory=AutoencoderStageConfig)
    denoiser: DenoiserStageConfig = field(default_factory=DenoiserStageConfig)


@dataclass
class AnonymizeConfig:
    # generative: a new film from pure noise with the input's findings only (SPG pushes away
    # from its identity/age/sex); img2img: redraw the input partly (strength), which keeps its
    # coarse anatomy and so its identity
    mode: str = "generative"
    strength: float = 0.6  # how far the latent is noised: 0 keeps the image, 1 redraws it
    ddim_steps: int = 10  # DDIM steps for the full schedule; strength uses a part of them
    batch_size: int = 16
    estimate_unknown: bool = True  # unknown age/sex/findings estimated by the attribute encoder
    # estimated findings reach the denoiser as yes/no calls (0) or as graded evidence
    # sigmoid((logit p - logit threshold) / softness) (conditioning.ConditionState.with_called_diagnosis)
    finding_softness: float = 0.0
    # generative mode: the DDIM steps whose predicted clean film is mostly film (the last half of
    # the demo's) move it this far toward reading as the findings it is drawn with, told or
    # estimated (model/reading_guidance.py); 0: off
    reading_guidance: float = 0.0
    # what estimated findings are guided toward: "calls" (the calls the denoiser is drawing) or
    # "estimates" (the estimator's probabilities on the input film, so a film it is surer of draws
    # a plainer finding); told findings are guided toward the told labels either way
    reading_target: str = "calls"


# ---- evaluation: attacks, utility, quality, baselines, ablation (privdiff_core/evaluation)


@dataclass
class PairsConfig:
    """Balanced same/different-patient pairs (paper: 2000 / 5000)."""

    val: int = 200
    test: int = 400


@dataclass
class MaxImagesConfig:
    """Cap per split (whole patients kept); null = all."""

    train: int | None = None
    val: int | None = None
    test: int | None = None
    adaptive: int | None = None  # training images anonymized for the retrained attackers


@dataclass
class AttackerConfig:
    """`evaluate.verifier` (Siamese re-identification attacker) and `evaluate.classifier`
    (diagnosis judge and age/sex attacker): the same network and budget settings."""

    backbone: str = "small"  # verifier: small | resnet50; classifier: small | densenet121
    embed_dim: int = 64
    widths: list[int] | None = field(default_factory=lambda: [16, 32, 64])  # small: a stride-2 block each
    steps: int = 100
    batch_size: int = 32  # verifier: pairs per step
    lr: float = 2.0e-3
    weight_decay: float = 1.0e-4
    eval_every: int = 50  # steps between validation AUCs (the best checkpoint is kept)
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    augment: bool = False  # shifted / re-exposed training batches (the diagnosis judge in demo)


@dataclass
class AdaptiveConfig:
    """Attackers retrained on anonymized images."""

    init: str = "real"  # real: fine-tune the real-trained attacker (stronger) | scratch
    verifier_steps: int = 100
    classifier_steps: int = 60


@dataclass
class TSNEConfig:
    """Fig. 5: points coloured by sex/age; patients coloured by identity."""

    points: int = 80
    patients: int = 6


@dataclass
class FiguresConfig:
    grid_samples: int = 6  # Fig. 4: test images shown per method


@dataclass
class EvaluateConfig:
    runs: int = 1  # independent runs (pairs redrawn, attackers retrained); paper: 10
    # Each run also anonymizes again, with its own seeds: the runs' spread then includes the
    # outputs' own randomness (one main-job model, findings told: diagnosis AUC 0.613 and 0.658 on
    # two draws of its 160 test films, same judge). Costs runs x the anonymization.
    anonymize_per_run: bool = False
    bootstrap: int = 200  # bootstrap resamples of the test pairs for the AUC's 95% CI
    ci_level: float = 0.95
    pairs: PairsConfig = field(default_factory=PairsConfig)
    max_images: MaxImagesConfig = field(default_factory=MaxImagesConfig)
    # told to the anonymizer: none | sensitive (age, sex) | all (+ findings)
    anonymizer_conditions: str = "sensitive"
    batch_size: int = 32  # anonymization batch
    baselines: list[str] = field(default_factory=lambda: ["dp_pix"])  # added when --methods is not given
    verifier: AttackerConfig = field(default_factory=lambda: AttackerConfig(steps=150))
    classifier: AttackerConfig = field(default_factory=AttackerConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    tsne: TSNEConfig = field(default_factory=TSNEConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    # false alarms of real validation films at the memorization threshold (linkage.MEMORIZATION_FPR)
    memorization_fpr: float = 0.01
    # true FID is unsupported here (needs torchvision): keep null; any value is refused with the reason
    inception_weights: Any = None


@dataclass
class DPPixConfig:
    b: int = 4  # cell size b (divides image_size)
    m: int = 1  # m-neighbourhood
    eps: float = 1.0  # budget eps


@dataclass
class DeformationConfig:
    """PriCheXy-Net-style flow field, trained adversarially."""

    mu: float = 0.08  # the paper's 0.01 at 256 px (<= 1.28 px) scaled to 32 px
    base_width: int = 8  # U-Net width at full resolution
    smooth_kernel: int = 9  # Gaussian smoothing of the flow (PriCheXy-Net: 9, sigma 2)
    smooth_sigma: float = 2.0
    steps: int = 20  # adversarial generator steps
    pretrain_steps: int = 20  # the baseline's own verifier/classifier on real images first
    batch_size: int = 8
    lr: float = 1.0e-4
    ver_weight: float = 1.0  # weight of -log(1 - verifier score) of same-patient pairs
    diag_weight: float = 1.0  # weight of the auxiliary diagnosis BCE
    adversary_lr_scale: float = 0.1  # the adversaries keep learning at this fraction of their lr; 0 freezes


@dataclass
class BaselinesConfig:
    dp_pix: DPPixConfig = field(default_factory=DPPixConfig)
    deformation: DeformationConfig = field(default_factory=DeformationConfig)


def _ablation_variants() -> dict[str, list[str]]:
    return {
        "vanilla": ["sas.enabled=false", "spg.enabled=false"],
        "sas": ["sas.enabled=true", "spg.enabled=false"],
        "spg": ["sas.enabled=false", "spg.enabled=true"],
        "privdiff": ["sas.enabled=true", "spg.enabled=true"],
    }


@dataclass
class AblateConfig:
    variants: dict[str, list[str]] = field(default_factory=_ablation_variants)  # name -> training overrides
    baselines: list[str] = field(default_factory=lambda: ["dp_pix", "deformation"])  # evaluated beside them
    share_autoencoder: bool = True  # train the VAE + attribute encoder once, reuse it in every variant


# ---- federated training with Flower (server/, client/client_app.py, simulation/)


@dataclass
class StageCounts:
    """One number per training stage: R1 (autoencoder) then R2 (denoiser)."""

    autoencoder: int = 1  # shared VAE + attribute encoder: every site must share one latent space
    denoiser: int = 1  # SAS/SPG UNet, VAE frozen


@dataclass
class StageRates:
    """One server learning rate per training stage (FedOpt's server step on the averaged update)."""

    autoencoder: float = 1.0
    denoiser: float = 1.0


@dataclass
class SecAggConfig:
    """SecAgg+ (Flower): the server only ever sees the sum of masked updates."""

    # false = plain FedAvg, for comparison only (sites started by privdiff-client refuse it)

    enabled: bool = True
    num_shares: int | str = "auto"  # key shares per site: auto = all sites up to 5, else 2*ceil(log2 n)+1
    reconstruction_threshold: int | str = "auto"  # shares needed to unmask: auto = a majority of num_shares
    # +-range of every update value: auto = 2**range_headroom_bits x the largest |update| last round
    # (rounded up to a power of two)
    clipping_range: float | str = "auto"
    # 1 bit: the demo's 5th denoiser round outgrew the range in 3 of 3 runs, and each rerun cost a whole
    # round (1.5-3 min); 2 bits coarsen the quantization grid to 2 x range / 2**22 (< 1e-6 at range 1)
    range_headroom_bits: int = 2
    # first round of each stage under auto (Flower's default); a round with values beyond it is rerun wider
    initial_clipping_range: float = 8.0
    # an automatic range never grows beyond this: every site's influence per value stays bounded
    max_clipping_range: float = 8.0
    # seconds to wait for each SecAgg+ stage's answers (late sites count as dropped)
    timeout_s: float | None = 120.0
    # privdiff: Flower's SecAgg+ protocol with a fast, AES-CTR masked vector path (server/secagg.py);
    # flower: stock
    implementation: str = "privdiff"


@dataclass
class ValidationConfig:
    """The gate before signing: sites score the candidate on their own val split."""

    enabled: bool = True
    quorum: int | str = "auto"  # sites that must answer (auto = min_sites)
    # per stage: candidate val loss <= this x the accepted (seeded initial) model's
    max_loss_ratio: float = 1.5
    batches: int = 2  # val batches per stage and model at each site
    images: int = 12  # quick privacy/utility check: val films each site anonymizes (0 = losses only)
    # first model (no accepted one installed at the sites): re-ID AUC of output vs input at most this
    max_reid_auc: float = 0.75
    # ... and findings agreement of output vs input (the site's classifier) at least this
    min_diagnosis_agreement: float = 0.6
    # later models: re-ID AUC at most this above the sites' installed (last accepted) model's
    max_reid_auc_increase: float = 0.05
    max_agreement_drop: float = 0.1  # ... and findings agreement at most this below it
    # seconds to wait for the sites' scores (a site without its own judges trains them first)
    timeout_s: float = 900.0
    # training steps of the judges a site trains at the gate when it has none (null: the evaluate
    # sections' steps; `privdiff-client train-verifier` always trains those)
    judge_steps: int | None = None


@dataclass
class DPConfig:
    """Central DP with client-side fixed clipping (Flower's DP wrappers); off by default."""

    enabled: bool = False
    noise_multiplier: float = 1.0  # Gaussian noise std = noise_multiplier * clipping_norm / sampled sites
    clipping_norm: float = 0.1  # L2 norm every site's update is clipped to
    target_delta: float = 1.0e-5  # epsilon is reported at this delta (docs/threat-model.md)
    max_epsilon: float | None = None  # training stops before a round would spend more; null = no cap


@dataclass
class LightEvaluationConfig:
    """What `privdiff simulate` hands `privdiff evaluate`: a lighter pass than `evaluate:`."""

    methods: list[str] | None = None  # --methods; null: the evaluate: section's own
    overrides: list[str] = field(default_factory=list)  # key=value overrides of the evaluate: section
    conditions: list[str] | None = None  # --conditions: what the model is told; null: the config's


@dataclass
class SimulationConfig:
    cpus_per_site: float = 1.0  # Ray resources per virtual site: 1 CPU lets 2 sites train at once on 2 cores
    gpus_per_site: float = 0.0  # e.g. 0.25 to share one GPU between four virtual sites
    # sites that share cores keep within 2 local steps of the slowest (training/pacing.py): Linux
    # shares 3 one-thread sites on 2 cores unevenly and a round waits for the slowest
    pace_sites: bool = True
    # `privdiff simulate`'s report: a lighter pass (see demo.yaml); null = the evaluate: section as is
    evaluation: LightEvaluationConfig | None = None


@dataclass
class FederationConfig:
    sites: int = 3  # virtual hospitals in `privdiff simulate` (Flower num-supernodes; replaces synth.sites)
    min_sites: int = 3  # a round needs this many sites; SecAgg+ needs >= 2
    rounds: StageCounts = field(default_factory=StageCounts)  # FedAvg rounds per stage (0: stage skipped)
    # optimizer steps each site takes per round (its own train split)
    local_steps: StageCounts = field(default_factory=lambda: StageCounts(autoencoder=2, denoiser=2))
    # global weights <- global + server_lr x averaged update (1: FedAvg; buffers always take the
    # average). The average of alike sites is as long as one site's update, so >1 would buy
    # sequential progress per round; measured on the demo (one run, same autoencoder stage, light
    # evaluation, findings told): denoiser 2 loses diagnosis AUC 0.607 -> 0.564 and SSIM 0.13 -> 0.06
    server_lr: StageRates = field(default_factory=StageRates)
    round_retries: int = 1  # a round with too few usable updates runs again this often, then the run stops
    # a site's weight = the examples it declares when it joins (describe), capped here; never what it
    # reports per round
    max_site_weight: int = 10000
    wait_for_sites_s: float = 60.0  # deployment: how long the server waits for min_sites to connect
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)


@dataclass
class PrivdiffConfig:
    """A whole privdiff config (the `tiny` values as defaults)."""

    seed: int = 0
    data: str | None = None  # dataset folder: a synthetic/site folder, ChestX-ray14 or CheXpert layout
    out: str | None = None  # run directory (checkpoints, resolved config, outputs)
    image_size: int = 32
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    synth: SynthConfig = field(default_factory=SynthConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    sas: SASConfig = field(default_factory=SASConfig)
    spg: SPGConfig = field(default_factory=SPGConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    anonymize: AnonymizeConfig = field(default_factory=AnonymizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    ablate: AblateConfig = field(default_factory=AblateConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
