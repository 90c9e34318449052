"""Training the TPoS audio encoder (``tpos-live train-encoder``).

- :mod:`.datasets`: labelled clips in the common layouts, prompts, splits, the spectrogram cache, batches;
- :mod:`.losses`: the paper's loss terms (equations (1)-(5)) and SpecAugment;
- :mod:`.trainer`: the optimisation recipe, checkpoints, resume and metrics;
- :mod:`.cli`: the ``train-encoder`` and ``import-tpos`` subcommands.
"""
