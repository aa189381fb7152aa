"""`add` (and every --dry-run or -v that shows a transaction): the transaction texts."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any
from typing import Mapping as MappingT


def transactions_text(
    transactions: MappingT[Any, str], tools: MappingT[int, str] = MappingProxyType({})
) -> str:
    """Restore texts per family, each under a `# IPv4: iptables-nft-restore --noflush`
    line naming the command that applies it (`tools`, per family: the run's flavour;
    plain `iptables-restore` where not given); the nftables transaction (key "nft",
    both families) under `# nftables: nft -f -`."""

    def header(key: Any) -> str:
        if key == "nft":
            return "# nftables: nft -f -"
        plain = f"{'ip6tables' if key == 6 else 'iptables'}-restore"
        return f"# IPv{key}: {tools.get(key, plain)} --noflush"

    return "".join(
        f"{header(key)}\n{text}"
        for key, text in sorted(transactions.items(), key=lambda kv: (kv[0] == "nft", str(kv[0])))
    )
