"""Per-session networking: address leases, network namespaces and veth pairs,
and the nftables rules that give sessions egress and nothing else.

Imports nothing from wire, control or api.
"""

from .firewall import Firewall, NetworkPolicy
from .links import SessionNetwork, create_session_network, destroy_session_network
from .manager import NetworkManager
from .pool import AddressPool, Lease, NetworkError

__all__ = [
    "AddressPool",
    "Firewall",
    "Lease",
    "NetworkError",
    "NetworkManager",
    "NetworkPolicy",
    "SessionNetwork",
    "create_session_network",
    "destroy_session_network",
]
