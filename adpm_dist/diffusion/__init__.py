"""The paper's math as pure functions and one scheduler, independent of any network or data.

noise.py: the per-class noise levels lambda_j (eq. 14) and their test-time estimate (eq. 18);
scheduler.py: ADPMScheduler, the anisotropic forward process (eq. 5), its posterior and samplers;
losses.py: the diffusion loss (noise MSE + RBF-MMD, eq. 17); oracle.py: the Bayes-optimal denoiser
used to measure what anisotropy can do at best. docs/algorithm.md states each equation.
"""
