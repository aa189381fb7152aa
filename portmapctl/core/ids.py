"""Container IDs as the tables print them: one length for the renderers and for the
cache's look-up of a short form (cni/entries.py), so that neither imports the other."""

from __future__ import annotations

from portmapctl.core.patterns import lazy

SHORT_ID = 12  # as podman and docker show container IDs
# Nomad's allocation IDs; Nomad prints one by its first group, 8 characters.
UUID = lazy(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
UUID_SHORT = 8


def short_form(container_id: str) -> str:
    """The container ID as tables and texts print it: a UUID (a Nomad allocation) by
    its first group, as `nomad alloc status 0b4e5e4f` does (its first 12 characters,
    `0b4e5e4f-7a3`, end inside the second group, which no one types); any other ID by
    its first SHORT_ID characters, as podman and docker do."""
    if len(container_id) > UUID_SHORT and UUID.fullmatch(container_id):
        return container_id[:UUID_SHORT]
    return container_id[:SHORT_ID]
