"""Training the TPoS audio encoder (``tpos-live train-encoder``).

- :mod:`.datasets`: labelled clips in the common layouts, prompts, splits, the spectrogram cache, batches;
- :mod:`.losses`: the paper's loss terms (equations (1)-(5)) and SpecAugment;
- :mod:`.targets`: the text targets (CLIP's projected embeddings or the pooled output; MAP's tokens);
- :mod:`.distributed`: training on several processes (torchrun) as on one;
- :mod:`.trainer`: the optimisation recipe, checkpoints, resume and metrics;
- :mod:`.cli`: the ``train-encoder`` and ``import-tpos`` subcommands.
"""
