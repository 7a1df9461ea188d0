"""The allocator setting of training: a no-op off glibc, never an error."""

from latentad import allocator


def test_keep_freed_blocks_and_release_run_anywhere():
    took = allocator.keep_freed_blocks()
    assert isinstance(took, bool)
    assert took == (allocator._libc() is not None)
    allocator.release()
