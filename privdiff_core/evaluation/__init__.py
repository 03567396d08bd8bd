"""Evidence for an anonymizer: privacy attacks, diagnosis utility, image quality, baselines, report.

The protocol follows PriCheXy-Net (Packhäuser et al. 2023), which the PrivDiff-Net paper follows:
every attacker and judge is trained on real images of the training patients and tested on
held-out patients; the re-identification attacker is also *retrained* on anonymized images
(an adaptive attacker) before it is tested on linkage pairs (anonymized image, original image).

Modules (each one job):
  protocol      patient-disjoint cohorts, subsampling by patient, seeds
  metrics       ROC AUC with bootstrap CI, per-finding AUC, accuracy against chance (scikit-learn)
  attackers     the verifier and the classifiers, trained by `privdiff_core.fitting.fit`
  judges        the attackers/judges trained on real images, cached per run
  quality       SSIM and the Fréchet distance on the diagnosis network's features
  methods       what can be evaluated: a trained anonymizer (in a mode, at a strength), its VAE
                alone, the baselines, trivial references
  oracle        synthetic data only: each film's findings re-rendered on a new patient of its
                site (privdiff_core.synth.oracle): the privacy floor and the utility ceiling
  linkage       re-ID against hard negatives (same sex, age group, site), retrieval precision@1,
                memorization against the training patients
  limits        every method's distance to the oracle's floor, real diagnosis and the ceiling
  baselines/    DP-Pix (Fan 2018) and the flow-field deformation baseline (PriCheXy-Net)
  engine        runs one method through every attack and judge
  results       the measurements as dataclasses (engine writes them; report, limits, figures read
                them; report.json and cached results are their `asdict`)
  report        report.json + report.md (tables shaped like the paper's Tables 1-3)
  figures       privacy-utility scatter, sample grid, t-SNE of attacker embeddings
  cli_evaluate  `privdiff evaluate`;  cli_ablate  `privdiff ablate`
"""
