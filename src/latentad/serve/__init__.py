"""Inspection service: `latentad serve` scores uploads over HTTP with the calibration kept beside the model."""
