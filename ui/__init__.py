"""The desktop app's Qt assets (theme.qss, icons/*.svg), installed as the package ``tpos_live.ui``.

They live at the repository's top level (beside ``tpos_live/``) and are mapped into the package by
``[tool.setuptools] package-dir`` in pyproject.toml; find them with ``tpos_live.app.assets``.
"""
