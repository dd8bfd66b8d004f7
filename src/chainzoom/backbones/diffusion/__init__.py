"""One-step diffusion SR (OSEDiff) on SD3 and SD 2.1, loading the official checkpoint formats."""
