"""DAPE: the official Chain-of-Zoom default prompter, RAM tags (with DAPE's LoRA) of each view.

``swin`` is RAM's Swin image encoder, ``tagging`` its Query2Label tagging head and the
whole tagger, ``checkpoint`` reads the official ``ram_swin_large_14m.pth`` and ``DAPE.pth``
(LoRA merged as the official ``.eval()`` merges it), ``prompter`` turns a view into the
official prompt. Plain torch, written from the architecture: no RAM, timm or loralib code.
"""
