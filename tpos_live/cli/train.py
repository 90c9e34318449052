"""``tpos-live train-encoder`` and ``tpos-live import-tpos`` (their flags: ``tpos_live.training.cli``)."""

from tpos_live.training.cli import add_import_command, add_train_command

__all__ = ["add_import_command", "add_train_command"]
