"""Resumable run folders and what they render: local runs, full-image levels, pyramids, strip and animation, progress."""
