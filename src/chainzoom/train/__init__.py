"""Training the SR backbone: OSEDiff on SD3 with the official recipe (issue 17).

:mod:`.degradations` makes (LR, HR) pairs on the fly (Real-ESRGAN's second-order
pipeline, or plain bicubic), :mod:`.lpips` the perceptual loss, :mod:`.osediff` the
trainer that writes the official checkpoint files, and :mod:`.config` its typed options.
"""
