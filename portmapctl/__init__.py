"""portmapctl: inspect and repair the state the CNI portmap plugin leaves on a node."""

__version__ = "0.2.0"
