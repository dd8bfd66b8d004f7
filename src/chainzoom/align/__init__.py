"""GRPO preference alignment of the prompt VLM (``chainzoom align``).

``rewards`` (the Reward seam: named, weighted components), ``critic`` (the critic VLM
and its score cache), ``dataset`` (training pairs from real zoom chains), ``trainer``
(TRL's GRPOTrainer with a LoRA adapter), ``log`` (the per-step CSV and its curves) and
``command`` (the CLI). Nothing heavy is
imported here, so ``import chainzoom.align`` stays cheap.
"""
