"""Native attacks of the core: ``pgd``, ``ifgsm``, ``fgsm``, ``cw_l2`` (Carlini & Wagner L2)
and ``ead`` (elastic net); ``str`` in :mod:`advinterp.attacks.str_attack`."""
from .cw import CarliniL2, carlini_l2
from .ead import ElasticNet, elastic_net
from .fgsm import FGSM
from .ifgsm import IFGSM
from .pgd import PGD

__all__ = ["PGD", "IFGSM", "FGSM", "CarliniL2", "ElasticNet", "carlini_l2", "elastic_net"]
