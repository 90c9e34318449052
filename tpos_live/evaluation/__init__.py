"""``tpos-live evaluate``: does a video follow its sound, does it flicker, and the paper's Table 2 metrics.

- :mod:`~tpos_live.evaluation.signals`: reactivity and flicker, pure functions of per-frame series;
- :mod:`~tpos_live.evaluation.reader`: frames streamed through PyAV (bounded memory, progress bar);
- :mod:`~tpos_live.evaluation.networks`: the pretrained networks (CLIP, an ImageNet classifier, VideoMAE),
  loaded like every model of the project, and their tiny random twins;
- :mod:`~tpos_live.evaluation.metrics`: clip-text, clip-audio, is and fvd from what the networks saw;
- :mod:`~tpos_live.evaluation.evaluate`: the spec, one streamed pass per video, the table and the JSON.

docs/evaluation.md defines every metric and gives its source.
"""
