"""Baselines of the paper's Table 1 that can be rebuilt here: DP-Pix (Fan 2018) and the flow-field
deformation of PriCheXy-Net (Packhäuser et al. 2023); plus trivial references (identity, noise)
that pin the two ends of the privacy scale.
"""
