"""The totesys source tables as observable source assets."""
