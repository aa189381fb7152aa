"""Where things live on a node (kept apart so the CLI can name them cheaply).

`PORTMAPCTL_RUN_DIR` moves the run directory (lock, gc state) elsewhere: for tests,
and for hosts where several independent portmapctl setups must not share one lock.
"""

import os

# libcni's cache: the runtime's own, and the one Multus gives libcni for the delegate
# networks (its `cniDir`, this by default). Read both by default (SPEC §3): on a Multus
# node the network that names a pod's portmap chain is cached only in the second.
CNI_CACHE_DIR = "/var/lib/cni"
MULTUS_CACHE_DIR = "/var/lib/cni/multus"
DEFAULT_CNI_CACHE_DIRS = (CNI_CACHE_DIR, MULTUS_CACHE_DIR)
RUN_DIR = os.environ.get("PORTMAPCTL_RUN_DIR") or "/run/portmapctl"
