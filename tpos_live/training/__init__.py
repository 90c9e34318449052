"""Training the TPoS audio encoder (``tpos-live train-encoder``).

- :mod:`.spec`: what a run is (:class:`~.spec.TrainSpec`, from the command line's flags), the data set
  layouts and the other data facts;
- :mod:`.recipe`: the optimisation settings and where their defaults come from;
- :mod:`.build`: the composition root: checks a spec's paths, builds the data, targets and trainer, fits;
- :mod:`.datasets`: labelled clips in the common layouts, splits, the spectrogram cache, batches;
- :mod:`.losses`: the paper's loss terms (equations (1)-(5)) and SpecAugment;
- :mod:`.targets`: the text targets (CLIP's projected embeddings or the pooled output; MAP's tokens);
- :mod:`.distributed`: training on several processes (torchrun) as on one;
- :mod:`.trainer`: the training loop, checkpoints, resume and metrics.

The flags themselves are :mod:`tpos_live.cli.train`'s.
"""
