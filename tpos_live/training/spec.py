"""What a ``train-encoder`` run is, as its flags give it: :class:`TrainSpec`, built by the command line and
nothing else, which :func:`tpos_live.training.build.train_encoder` builds the run from.

Also the one home of the data set layouts and the other data facts the command line and
:mod:`tpos_live.training.datasets` share. Importable without torch, so that ``--help`` reads its defaults
from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tpos_live.audio.spectrogram import SpectrogramConfig
from tpos_live.limits import BACKBONE_WIDTH_RANGE, OFFICIAL_BACKBONE_WIDTH
from tpos_live.names import MAP_OUTPUTS, OFFICIAL_MAP_OUTPUT, TEXT_TARGETS
from tpos_live.training.recipe import TrainConfig

# The layouts of labelled clips (read by training/datasets.py, whose docstring details each), and what
# each looks like.
LAYOUTS: dict[str, str] = {
    "folders": "<label>/<clip>",
    "vggsound": "its CSV; test rows validate",
    "esc50": "meta/esc50.csv + audio/; --val-fold validates",
    "prefix": "Landscape: <label>_<name>.wav",
}
AUTO_LAYOUT = "auto"  # pick the layout from what the data is
LAYOUT_CHOICES = (AUTO_LAYOUT, *LAYOUTS)
FIXED_SPLIT_LAYOUTS = ("vggsound", "esc50")  # layouts whose data set says which clips validate
CSV_LAYOUTS = ("vggsound", "esc50")  # layouts read from a CSV, whose clips may be elsewhere (audio_dir)
FOLD_LAYOUTS = ("esc50",)  # layouts whose validation clips are a fold of the data set
VAL_FRACTION = 0.1  # share of each label's clips held out to validate where the data set fixes no split
VAL_FOLD = 5  # the ESC-50 fold that validates

# The front end a run trains on unless told otherwise: the official inference map's sizes, its dB taken
# below each segment's own maximum, so that the level does not matter.
TRAIN_FRONT_END = SpectrogramConfig(kind="stft", floor="relative")
MEL_N_FFT = 2048  # the FFT of the mel maps the official encoder was trained on


def front_end(kind: str, floor: str, **sizes: int | None) -> SpectrogramConfig:
    """The ``kind`` map ("stft" or "mel") with ``floor`` and the ``sizes`` given (None: the defaults of
    :class:`SpectrogramConfig`); a mel map has an FFT of :data:`MEL_N_FFT` unless given, and one band per
    row. Raises ValueError for values the config refuses."""
    given = {name: value for name, value in sizes.items() if value is not None}
    if kind == "mel":
        given.setdefault("n_fft", MEL_N_FFT)
        if "height" in given:
            given["n_mels"] = given["height"]
    return SpectrogramConfig(kind=kind, floor=floor, **given)


@dataclass(frozen=True)
class PromptTemplate:
    """Turns a label into the text the encoder learns to match, e.g. ``"the sound of {label}"``.

    The default is the bare label, as the official TPoS training did.
    """

    template: str = "{label}"

    def __post_init__(self) -> None:
        if self.template.count("{label}") != 1:
            raise ValueError(f"a prompt template must contain {{label}} once, got {self.template!r}")
        try:
            self.template.format(label="x")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"prompt template {self.template!r} has braces other than {{label}} ({error}): "
                "write literal braces as {{ and }}"
            ) from None

    def __call__(self, label: str) -> str:
        return self.template.format(label=label)


@dataclass(frozen=True)
class DataSpec:
    """The labelled clips a run trains on, how they are split, and where their spectrograms are cached.

    Attributes:
        source: a folder of clips, or a data set's CSV (VGGSound, ESC-50).
        layout: one of :data:`LAYOUTS`, or :data:`AUTO_LAYOUT` to pick one from what ``source`` is.
        audio_dir: where a CSV's clips are (None: next to it).
        prompt: turns a label into the text the encoder is aligned to.
        val_fraction: share of each label's clips that validates, where the data set fixes no split
            (None: :data:`VAL_FRACTION`).
        val_fold: the ESC-50 fold that validates (None: :data:`VAL_FOLD`).
        cache: the spectrogram cache folder (None: ``cache/`` in the run's folder).
        workers: processes that compute spectrograms and load batches (0: this one).
    """

    source: Path
    layout: str = AUTO_LAYOUT
    audio_dir: Path | None = None
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    val_fraction: float | None = None
    val_fold: int | None = None
    cache: Path | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUT_CHOICES:
            raise ValueError(f"layout must be one of {', '.join(LAYOUT_CHOICES)}, got {self.layout!r}")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must lie in [0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise ValueError(f"--data-workers must be at least 0, got {self.workers}")


@dataclass(frozen=True)
class TrainSpec:
    """One run of ``tpos-live train-encoder``.

    Attributes:
        data: the clips and their split.
        output: the run's folder: checkpoints, training state, metrics (and the cache unless told).
        model: the diffusion model whose text encoder gives the targets (an alias, a folder, a hub id).
        spectrogram: the front end the encoder is trained on.
        backbone_width: the encoder's ResNet-18 width (the official 64; narrower for a small world).
        map_output: MAP's output (``TPoSConfig.map_output``: the official dropout and GELU, or linear).
        recipe: the optimisation settings.
        text_target: the InfoNCE target, one of ``TEXT_TARGETS`` (see :mod:`tpos_live.training.targets`).
        init: start from this TPoS checkpoint instead of random weights.
        resume: continue the run saved in ``output``.
        keep_epochs: keep every epoch's checkpoint.
        compute_device: where to train (a device name, or "auto").
        quiet: no progress bars.
        make_default: make the best checkpoint the default encoder of its text family.
    """

    data: DataSpec
    output: Path
    model: str
    spectrogram: SpectrogramConfig = TRAIN_FRONT_END
    backbone_width: int = OFFICIAL_BACKBONE_WIDTH
    map_output: str = OFFICIAL_MAP_OUTPUT
    recipe: TrainConfig = field(default_factory=TrainConfig)
    text_target: str = "projected"
    init: str | None = None
    resume: bool = False
    keep_epochs: bool = False
    compute_device: str = "auto"
    quiet: bool = False
    make_default: bool = True

    def __post_init__(self) -> None:
        if self.text_target not in TEXT_TARGETS:
            raise ValueError(f"text target must be one of {', '.join(TEXT_TARGETS)}, got {self.text_target!r}")
        low, high = BACKBONE_WIDTH_RANGE
        if not low <= self.backbone_width <= high:
            raise ValueError(f"--backbone-width must be in {low}..{high} (the official encoder's is "
                             f"{OFFICIAL_BACKBONE_WIDTH}), got {self.backbone_width}")
        if self.map_output not in MAP_OUTPUTS:
            raise ValueError(f"--map-output must be one of {', '.join(MAP_OUTPUTS)}, got {self.map_output!r}")
