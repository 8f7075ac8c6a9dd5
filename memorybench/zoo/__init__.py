"""The reference zoo: six small world models that share one frame codec and action conditioning.

=========================  ===================  =================================================  ==========
registry name              module               what carries information over time                 parameters
=========================  ===================  =================================================  ==========
``lssvwm``                 ``zoo.lssvwm``       block-wise Mamba-2 (SSD) + frame-local attention   2,963,019
``full-attention``         ``zoo.attention``    causal attention over every past frame (KV cache)  3,045,379
``frame-local-attention``  ``zoo.attention``    attention over the last 4 frames only              3,045,379
``s4``                     ``zoo.s4``           diagonal S4 (S4D) per token position               3,049,987
``mamba``                  ``zoo.mamba``        Mamba-2 (SSD) per token position                   2,963,019
``diffusion``              ``zoo.diffusion``    diffusion-forcing transformer (frame-causal)       3,078,275
=========================  ===================  =================================================  ==========

All default configs have width ``D = 128``, 4 heads, MLPs of ``4 D`` and the same codec (16x16
patches: a 4x4 token grid at 64x64, one token per occlusion slot; with 8x8 patches, 64 tokens a
frame, one full-attention training step on a 288-frame window took ~130 s on this project's 2-core
CPU, beyond its training budget). Depth sets the parameter budget: 6 layers of (SSM, attention,
MLP) for lssvwm and mamba (Mamba-2 blocks, ``zoo.ssd``: ``expand 2``, 4 heads of 64 channels,
state 64, conv 4; lssvwm blocks alternate whole grid / 2x2 tokens), 8 of (S4D with state 64,
attention, MLP) for s4, 10 of (attention, MLP) for the transformers. lssvwm's frame-local
attention and the ``frame-local-attention`` model have the same window, 4 frames (the tasks'
``recent_window``), so that their difference is what lssvwm's SSM adds. The counts are within 4 %
of each other (2.96-3.08 M; the 16x16-patch decoder holds 0.8 M of them), so a comparison is about
memory, not size (a float32 checkpoint is about 12 MB).

Shared parts (codec, embeddings, checkpoints, the adapter base) are in ``zoo.common``; training is
``memorybench.train``.
"""

from ..models import MODEL_GROUPS

#: registry names of the zoo (the built-in models tagged ``zoo`` in ``memorybench.models``)
ZOO_MODELS: tuple[str, ...] = MODEL_GROUPS["zoo"]
