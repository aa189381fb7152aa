"""Container IDs as the tables print them: one length for the renderers and for the
cache's look-up of a short form (cni/entries.py), so that neither imports the other."""

from __future__ import annotations

SHORT_ID = 12  # as podman and docker show container IDs
