"""Per-session networking: address leases, network namespaces and veth pairs,
and the nftables rules that give sessions egress and nothing else.

Imports nothing from wire, control or api.
"""

from .firewall import EgressPorts, Firewall
from .links import SessionNetwork, create_session_network, destroy_session_network
from .manager import EgressSettings, NetworkManager
from .policy import NetworkPolicy
from .pool import AddressPool, Lease, NetworkError

__all__ = [
    "AddressPool",
    "EgressPorts",
    "EgressSettings",
    "Firewall",
    "Lease",
    "NetworkError",
    "NetworkManager",
    "NetworkPolicy",
    "SessionNetwork",
    "create_session_network",
    "destroy_session_network",
]
