"""Where things live on a node (kept apart so the CLI can name them cheaply)."""

CNI_CACHE_DIR = "/var/lib/cni"
RUN_DIR = "/run/portmapctl"
