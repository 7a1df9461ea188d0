"""Deployment: a detector's scoring graph exported to ONNX / OpenVINO, and engines that run it."""

from latentad.export.engine import ENGINES, ExportedDetector, is_export
from latentad.export.graph import FORMATS, ScoringGraph, export_detector

__all__ = ["ENGINES", "FORMATS", "ExportedDetector", "ScoringGraph", "export_detector", "is_export"]
