"""The plugin's nftables backend (see nftables/ruleset.py).

The names every module here needs, cheap to import: `access/nft.py` starts `nft`
with them before the parser (ruleset.py) is imported.
"""

TABLE = "cni_hostport"
FAMILY_NAMES = {4: "ip", 6: "ip6"}
