"""The algorithm over the two seams: the zoom chain and its baselines, tiled upscaling."""
