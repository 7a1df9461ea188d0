"""Latent-space analysis: why a detector separates normal from abnormal images (`analyze`)."""

from latentad.analysis.suite import analyze

__all__ = ["analyze"]
