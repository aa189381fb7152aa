"""libcni's cache: which containers are live on this node, with their port mappings.

After a successful ADD of a whole network list, libcni writes
`<cache-dir>/results/<network>-<containerID>-<ifname>` (kind "cniCacheV1") and
removes it on DEL. Each file names the network and container, and holds the network
configuration (base64), the capability args (`portMappings`) and the ADD result
(the container's addresses). From that we rebuild the `MappingConfig` the plugin
was given.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from portmapctl.cni import config as cni_config
from portmapctl.core import validate
from portmapctl.core.mapping import MappingConfig
from portmapctl.errors import BadInput, HostProblem
from portmapctl.host import files
from portmapctl.iptables.chains import chain_name

MAX_CACHE_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    """One cached attachment. `mapping` is None when it has no portmap to speak of."""

    network: str
    container_id: str
    ifname: str
    path: str
    mapping: Optional[MappingConfig]

    @property
    def dnat_chain(self) -> str:
        return chain_name(self.network, self.container_id, "DN-")

    @property
    def snat_chain(self) -> str:
        return chain_name(self.network, self.container_id, "SN-")


def results_dir(cache_dir: str) -> str:
    return os.path.join(cache_dir, "results")


def cache_exists(cache_dir: str) -> bool:
    """Whether `results/` is there; a cache that cannot be looked at is exit 3, never
    "no cache" (os.path.isdir says False for both, and gc would then trust --keep
    alone, or list call the node empty)."""
    folder = results_dir(cache_dir)
    try:
        return stat.S_ISDIR(os.stat(folder).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise HostProblem(f"cannot read the CNI cache {folder}: {err.strerror}") from None


def read_cache(cache_dir: str) -> Optional[List[Attachment]]:
    """Every attachment in the cache; None when there is no cache at all.

    A file we cannot make sense of is bad input (exit 2), named with its problem:
    guessing would make `gc` delete a live container's mappings.
    """
    folder = results_dir(cache_dir)
    if not cache_exists(cache_dir):
        return None
    attachments = []
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        # A cache that cannot be read is no empty cache: gc would take every chain
        # for stale. The environment's problem (exit 3), not the input's.
        raise HostProblem(f"cannot read the CNI cache {folder}: {err.strerror}") from None
    for entry in names:
        path = os.path.join(folder, entry)
        if entry.startswith(".") or not os.path.isfile(path):
            continue  # libcni writes through temporary files
        attachments.append(read_attachment(path))
    return attachments


def cached_names(cache_dir: str, limit: int = 4096) -> List[Tuple[str, str]]:
    """(network, container ID) of each cached attachment, for shell completion.

    Unlike `read_cache` this never fails: a TAB press must not print an error, so
    anything unreadable or odd is skipped. Only the two names are parsed (no config
    decoding), and at most `limit` files are read, so it stays fast on a big node.
    """
    folder = results_dir(cache_dir)
    try:
        entries = sorted(os.listdir(folder))[:limit]
    except OSError:
        return []
    found = set()
    for entry in entries:
        path = os.path.join(folder, entry)
        # isfile: a FIFO planted in the folder would block the shell forever.
        if entry.startswith(".") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as handle:
                cached = json.loads(handle.read(MAX_CACHE_FILE_BYTES))
            names = (cached.get("networkName"), cached.get("containerId"))
            for name in names:
                validate.cni_name(name, "name")
        except (OSError, ValueError, AttributeError, RecursionError, BadInput):
            continue
        found.add(names)
    return sorted(found)


def read_attachment(path: str) -> Attachment:
    source = f"CNI cache file {path}"
    text = files.read_text(path, "CNI cache file", MAX_CACHE_FILE_BYTES, regular_only=True)
    cached = cni_config.ensure_mapping(cni_config.load_json(text, source), source)
    kind = cached.get("kind")
    if kind != "cniCacheV1":
        raise BadInput(f"{source}: unknown kind {kind!r} (expected cniCacheV1)")
    container_id = _named(cached.get("containerId", ""), "container ID", source)
    ifname = cached.get("ifName") or ""
    if not isinstance(ifname, str):
        raise BadInput(f"{source}: ifName must be a string")
    conf = _portmap_conf(_decode_config(cached.get("config"), source), source)
    network = cached.get("networkName") or (conf or {}).get("name") or ""
    network = _named(network, "network name", source)
    capability = cached.get("capabilityArgs") or {}
    if not isinstance(capability, dict):
        raise BadInput(f"{source}: capabilityArgs must be an object")
    mapping = None
    raw_ports = capability.get("portMappings")
    if conf is not None and raw_ports:
        plugin_conf = dict(conf, name=network, prevResult=cached.get("result"))
        mapping = cni_config.plugin_config(
            plugin_conf,
            container_id,
            source,
            ifname=ifname or None,
            port_mappings_override=raw_ports,
        )
        if not mapping.families:
            mapping = None  # no address: the plugin forwards nothing
    return Attachment(network, container_id, ifname, path, mapping)


def _named(value: Any, what: str, source: str) -> str:
    """A CNI name from the file; the error names the file, so it can be found."""
    try:
        return validate.cni_name(value, what)
    except BadInput as err:
        raise BadInput(f"{source}: {err}") from None


def _decode_config(value: Any, source: str) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{source}: config must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{source}: config is not valid base64") from None
    try:
        return cni_config.load_json(raw.decode("utf-8"), f"{source} (config)")
    except UnicodeDecodeError:
        raise BadInput(f"{source}: config is not UTF-8 text") from None


def _portmap_conf(conf: Any, source: str) -> Optional[dict]:
    """The portmap plugin's entry of a conflist (or the config itself), with its name."""
    if conf is None:
        return None
    if not isinstance(conf, dict):
        raise BadInput(f"{source}: the cached config must be a JSON object")
    plugins = conf.get("plugins")
    if plugins is None:
        return conf if conf.get("type") == "portmap" else None
    if not isinstance(plugins, list):
        raise BadInput(f"{source}: the cached config's plugins must be a list")
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("type") == "portmap":
            return dict(plugin, name=conf.get("name", plugin.get("name")))
    return None
