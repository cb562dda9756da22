"""The landmark example's pipeline: typed config, stages, completion markers (not a library)."""
