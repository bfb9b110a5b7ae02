"""Running the matrix: the plan per env, batches of cells per ref x variant, the workaround search, exports by the
ref's own script, progress, shards, what a run keeps on disk.
"""
