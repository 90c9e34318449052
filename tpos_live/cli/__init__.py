"""The `tpos-live` command line: :mod:`.main` builds the parser, one module per command (:mod:`.render`,
:mod:`.live`, :mod:`.app`, :mod:`.train`), every shared flag defined once in :mod:`.options`.

A command module only parses its flags into specs and calls :mod:`tpos_live.session`; models load
inside ``run``, so ``--help`` answers without importing torch.
"""
