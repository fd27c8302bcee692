"""``slimtvm tune``: MetaSchedule tasks from a model's kernels, the tuning database, progress
display, and measurement on this machine or on a device over TVM RPC."""
