"""Adapters that run the superpixel attacks inside other attack harnesses.

Each adapter is an optional extra and is imported on its own, so ``import sai_attack`` never
imports torchattacks or ART:

- :mod:`sai_attack.integrations.torchattacks` (``pip install 'sai-attack[torchattacks]'``):
  the superpixel methods as ``torchattacks.Attack`` subclasses.
- :mod:`sai_attack.integrations.art` (``pip install 'sai-attack[art]'``): an ART
  ``EvasionAttack`` for a ``PyTorchClassifier``.
"""
