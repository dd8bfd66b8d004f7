"""``chainzoom eval``: every mode on every image, run through the API, scored with :mod:`chainzoom.metrics`, reported."""
