"""Training: the loop over phases, losses, augmentation and checkpoints (see DESIGN.md).

Importing this package registers the ``train:`` and ``augment:`` config sections.
"""

from pcgan.training.config import TrainConfig
from pcgan.training.augment import AugmentConfig

__all__ = ["TrainConfig", "AugmentConfig"]
