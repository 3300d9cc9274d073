"""Native attacks of the core: ``pgd``, ``cw_l2`` (Carlini & Wagner L2) and ``ead`` (elastic net)."""
from .cw import CarliniL2, carlini_l2
from .ead import ElasticNet, elastic_net
from .pgd import PGD

__all__ = ["PGD", "CarliniL2", "ElasticNet", "carlini_l2", "elastic_net"]
