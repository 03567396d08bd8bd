"""Evidence for an anonymizer: privacy attacks, diagnosis utility, image quality, baselines, report.

The protocol follows PriCheXy-Net (Packhäuser et al. 2023), which the PrivDiff-Net paper follows:
every attacker and judge is trained on real images of the training patients and tested on
held-out patients; the re-identification attacker is also *retrained* on anonymized images
(an adaptive attacker) before it is tested on linkage pairs (anonymized image, original image).

Modules (each one job):
  protocol      patient-disjoint cohorts, subsampling by patient, seeds
  metrics       ROC AUC with bootstrap CI, per-finding AUC, accuracy against chance (scikit-learn)
  attackers     training loop for the verifier and the classifiers, with validation-based selection
  judges        the attackers/judges trained on real images, cached per run
  quality       SSIM and the Fréchet distance on the diagnosis network's features
  methods       what can be evaluated: a trained anonymizer, the baselines, trivial references
  baselines/    DP-Pix (Fan 2018) and the flow-field deformation baseline (PriCheXy-Net)
  engine        runs one method through every attack and judge
  report        report.json + report.md (tables shaped like the paper's Tables 1-3)
  figures       privacy-utility scatter, sample grid, t-SNE of attacker embeddings
  cli_evaluate  `privdiff evaluate`;  cli_ablate  `privdiff ablate`
"""
