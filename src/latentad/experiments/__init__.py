"""Experiments at scale: method x data x seed grids, locally or on Dask, and the paper's tables."""
