"""Learning-rate schedules: the LR burst and the AdamNX schedule."""

from optarena.schedules.adamnx_schedule import AdamNXLR, adamnx_lr_ratio
from optarena.schedules.burst import CosineBurst, PlateauDetector
from optarena.schedules.lr_burst import LRBurst

__all__ = ["AdamNXLR", "CosineBurst", "LRBurst", "PlateauDetector", "adamnx_lr_ratio"]
