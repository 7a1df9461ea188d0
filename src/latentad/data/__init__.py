"""Data sets: every format yields lazily loaded `ImageSet`s and a train/test `Split`."""

from latentad.data.base import Batch, ImageSample, ImageSet, Record, Split

__all__ = ["Batch", "ImageSample", "ImageSet", "Record", "Split"]
