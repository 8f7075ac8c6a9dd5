"""The reference zoo: six small world models that share one frame codec and action conditioning.

=========================  ===================  =================================================  ==========
registry name              module               what carries information over time                 parameters
=========================  ===================  =================================================  ==========
``lssvwm``                 ``zoo.lssvwm``       block-wise selective SSM + frame-local attention   2,168,067
``full-attention``         ``zoo.attention``    causal attention over every past frame (KV cache)  2,255,875
``frame-local-attention``  ``zoo.attention``    attention over the last 4 frames only              2,255,875
``s4``                     ``zoo.s4``           diagonal S4 (S4D) per token position               2,260,483
``mamba``                  ``zoo.mamba``        selective SSM (Mamba) per token position           2,168,067
``diffusion``              ``zoo.diffusion``    diffusion-forcing transformer (frame-causal)       2,288,771
=========================  ===================  =================================================  ==========

All default configs have width ``D = 128``, 4 heads, MLPs of ``4 D`` and the same codec (8x8
patches); depth sets the parameter budget: 6 layers of (SSM, attention, MLP) for lssvwm and mamba
(selective SSM: ``expand 2``, state 16, conv 4; lssvwm blocks alternate whole grid / 2x2 tokens,
window 4), 8 of (S4D with state 64, attention, MLP) for s4, 10 of (attention, MLP) for the
transformers. The counts are within 6 % of each other, so a comparison is about memory, not size
(a float32 checkpoint is about 9 MB).

Shared parts (codec, embeddings, checkpoints, the adapter base) are in ``zoo.common``; training is
``memorybench.train``.
"""

#: registry names of the zoo (their classes are listed in ``memorybench.models.BUILTIN_MODELS``)
ZOO_MODELS = ("lssvwm", "full-attention", "frame-local-attention", "s4", "mamba", "diffusion")
