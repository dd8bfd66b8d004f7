"""Image-quality metrics: what ``chainzoom eval`` (:mod:`chainzoom.evaluation`) and the adaptive policy score with.

Every metric takes images as ``float [H, W, 3]`` numpy arrays in ``[0, 1]`` (RGB) and
returns a float; each module implements one family and names the reference it follows:

- :mod:`.niqe`, :mod:`.brisque_score`: no-reference naturalness (lower is better), with
  the pristine / trained models that PyPI packages ship (nothing is downloaded);
- :mod:`.statistics`: sharpness (variance of the Laplacian) and entropy, descriptive;
- :mod:`.pyiqa_metrics`: MUSIQ, MANIQA, CLIPIQA through pyiqa, only when the user
  installed it (non-commercial licence), otherwise reported as not available;
- :mod:`.fidelity`: PSNR and SSIM against a reference;
- :mod:`.color`: sRGB to CIE Lab and the colour shift used by :mod:`.drift`;
- :mod:`.catalog`: which no-reference metrics exist and which are available here;
- :func:`.niqe.score_niqe`: NIQE of a chainzoom tensor, the adaptive zoom policy's score.

Nothing here is imported by ``import chainzoom``; optional dependencies are imported
inside the functions that need them.
"""
