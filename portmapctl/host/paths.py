"""Where things live on a node (kept apart so the CLI can name them cheaply).

`PORTMAPCTL_RUN_DIR` moves the run directory (lock, gc state) elsewhere: for tests,
and for hosts where several independent portmapctl setups must not share one lock.
"""

import os

CNI_CACHE_DIR = "/var/lib/cni"
RUN_DIR = os.environ.get("PORTMAPCTL_RUN_DIR") or "/run/portmapctl"
