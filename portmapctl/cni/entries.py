"""The cache entries libcni names for one container on one network, found with `os`
alone: `add` asks for every mapping given without a backend, and importing
cni/cache.py (which reads them) costs ~5 ms, paid only where there is one to read."""

from __future__ import annotations

import os
from typing import List, Sequence, Union


def entry_paths(
    cache_dirs: Union[str, Sequence[str]], network: str, container_id: str
) -> List[str]:
    """The `results/NETWORK-CONTAINERID-*` files of each cache directory (the prefix also
    matches network "a", container "b-c" for "a-b"/"c": the reader tells them apart)."""
    prefix = f"{network}-{container_id}-"
    found = []
    for cache_dir in (cache_dirs,) if isinstance(cache_dirs, str) else cache_dirs:
        folder = os.path.join(cache_dir, "results")
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found += [os.path.join(folder, name) for name in names if name.startswith(prefix)]
    return found
