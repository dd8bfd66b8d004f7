"""The names a user chooses from, kept free of heavy imports.

Configs validate against these without importing torch; the modules that implement
each choice import them from here, so a name list exists once.
"""

#: ``chain`` is Chain-of-Zoom; the others are baselines at the same boxes: ``onestep`` is the
#: official one (interpolate, then the backbone once), ``direct`` ours (the backbone once, then
#: interpolate), ``bicubic`` and ``nearest`` interpolation alone.
MODES = ("chain", "direct", "onestep", "bicubic", "nearest")
#: Modes that run the backbone (and so the prompter).
MODEL_MODES = ("chain", "direct", "onestep")
#: Corrections after each step of the chain (see chainzoom.pipeline.consistency).
CONSISTENCY = ("none", "wavelet", "adain", "backprojection", "anchor")
#: ``chainzoom`` (float resampling, full resolution, any point; the default) or ``official``
#: (``inference_coz.py``'s 8-bit arithmetic on its centred square; chainzoom.pipeline.official).
PROTOCOLS = ("chainzoom", "official")
#: What a VLM prompter is shown: both scale-states (the paper's) or the zoomed view alone
#: (the official ``--rec_type recursive``, the paper's prompt ablation).
PROMPT_CONTEXTS = ("multiscale", "single")
#: How the chain chooses each step: ``fixed`` (one backbone, 4x steps) or ``adaptive``
#: (backbone and factor chosen per step by a no-reference score; chainzoom.pipeline.adaptive).
POLICIES = ("fixed", "adaptive")
#: Full-image output per level: pyramidal BigTIFF, Deep Zoom, or one PNG.
FORMATS = ("tiff", "dzi", "png")
#: Colour fixes of the diffusion backbones.
COLOR_FIXES = ("none", "wavelet", "adain")
#: The paper's prompt VLM (and the default GRPO policy).
DEFAULT_VLM = "Qwen/Qwen2.5-VL-3B-Instruct"
#: The paper's reward weights for GRPO alignment.
PAPER_REWARD_WEIGHTS = "critic=1.0,phrase=0.5,repetition=0.5"
