"""Learning-rate schedules: the LR burst, SGDR and the AdamNX schedule."""

from optarena.burst import CosineBurst, PlateauDetector
from optarena.schedules.adamnx_schedule import AdamNXLR, adamnx_lr_ratio
from optarena.schedules.lr_burst import LRBurst
from optarena.schedules.sgdr import SGDR, sgdr_position

__all__ = ["SGDR", "AdamNXLR", "CosineBurst", "LRBurst", "PlateauDetector", "adamnx_lr_ratio", "sgdr_position"]
