"""Checks every command runs before any model loads: no output lands on an input, and each input can be
read. Each failure is a :class:`~tpos_live.errors.UserError` of one line; nothing here writes a file.

    refuse_output_on_inputs(Path("out.mp4"), "-o", [("sound file", Path("song.wav"))])
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tpos_live.errors import UserError
from tpos_live.specs import CLAP_ENCODER

# (what the input is, its path); None, or a name that is no local path (a hub id, 'tiny'), is skipped
Input = tuple[str, "str | os.PathLike[str] | None"]


def refuse_output_on_inputs(output: Path, flag: str, inputs: Iterable[Input]) -> None:
    """UserError when writing ``output`` (given with ``flag``) would replace one of ``inputs``: the same
    file however it is spelled (symlinks, hard links, ``./``), or a file inside an input folder."""
    if not output.exists():
        return  # a path nothing is at holds no input
    for what, path in inputs:
        if path is None or not Path(path).exists():
            continue
        if _lands_on(output, Path(path)):
            raise UserError(f"{flag} '{output}' is the {what} '{path}': writing there would destroy it; "
                            f"give {flag} another path")


def _lands_on(output: Path, path: Path) -> bool:
    if path.is_file():
        return os.path.samefile(output, path)
    folder = path.resolve()
    # the place the rename replaces (a symlink there itself) and the file it reaches
    if (output.parent.resolve() / output.name).is_relative_to(folder) or output.resolve().is_relative_to(folder):
        return True
    # a hard link of a file inside the folder is the only other way to reach one of its files
    return output.stat().st_nlink > 1 and any(_same_file_in(output, path))


def _same_file_in(output: Path, folder: Path) -> Iterable[bool]:
    for root, _, names in os.walk(folder):
        for name in names:
            yield os.path.samefile(output, Path(root, name))


def check_output_folder(folder: Path) -> None:
    """UserError unless ``folder`` is a folder that can be written, or can be made where it is."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder '{folder}' is a file: give a folder (it is made if missing)")
    nearest = next(parent for parent in (folder, *folder.absolute().parents) if parent.exists())
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in '{nearest}' to make the output folder '{folder}': choose another path")


def existed(path: Path | None) -> bool:
    """Whether ``path`` is there now (before a command writes it: its summary then says "replaced")."""
    return path is not None and path.exists()


def written(path: Path, replaced: bool) -> str:
    """The summary's verb and path: ``replaced song.mp4`` or ``wrote song.mp4``."""
    return f"{'replaced' if replaced else 'wrote'} {path}"


# ---- what the commands read ---------------------------------------------------------------------------


def model_inputs(model: str | None = None, lora: str | None = None, taesd: str | None = None,
                 encoder: str | None = None, concepts: Path | None = None,
                 engines: Path | None = None) -> list[Input]:
    """The local files and folders of the model flags (hub ids and aliases are no local paths)."""
    from tpos_live.conditioning.checkpoint import checkpoint_paths

    found: list[Input] = [("model", model), ("LoRA", lora), ("TAESD decoder", taesd), ("concept bank", concepts),
                          ("engines folder", engines)]
    if encoder is not None and encoder.startswith(CLAP_ENCODER + ":"):
        found.append(("CLAP model", encoder.removeprefix(CLAP_ENCODER + ":")))
    elif encoder not in (None, "random", CLAP_ENCODER):
        found += [("encoder checkpoint", path) for path in checkpoint_paths(encoder)]
    return found


def check_conditioning(encoder: str | None, concepts: Path | None = None) -> None:
    """UserError unless a TPoS checkpoint ``encoder`` has both files and a config that reads, and the
    concept bank ``concepts`` (if given) parses."""
    if encoder is not None and encoder not in ("random", CLAP_ENCODER) and not encoder.startswith(CLAP_ENCODER + ":"):
        from tpos_live.conditioning.checkpoint import read_tpos_config

        read_tpos_config(encoder)
    if concepts is not None:
        from tpos_live.conditioning.concepts import load_concepts

        load_concepts(concepts)


def check_init_image(path: Path | None) -> None:
    """UserError unless ``path`` (if given) is an image that opens and decodes."""
    if path is not None:
        from tpos_live.diffusion.images import open_image

        open_image(path).close()


