"""Anomaly-map building blocks shared by detectors: SSIM, alignment, morphology, smoothing, fusion."""
