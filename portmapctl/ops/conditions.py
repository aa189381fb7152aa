"""iptables conditions that iptables itself refuses are bad input, said before a write.

portmapctl checks the words of `--conditions-v4/-v6` (conditionsV4/V6 of a config:
core/validate.conditions, no target, no command), not their meaning: a match iptables
does not know (`-m nosuchmatch`), an option it does not take (`--foo`) are iptables' to
judge. A transaction carrying them is refused whatever the table holds, and was tried
again as if the plugin had changed the table: exit 1, "gave up after 3 tries", where
SPEC §4 says bad input is exit 2. So before a write that is planned from a read (the
write without a read refuses them as it refuses a node not as it assumed), the
mapping's entry rules are put to `iptables-restore --test` (python-iptables: built on a
handle never committed), their jump turned into a RETURN in a scratch chain: the same
words in the same rule, parsed, never committed.
"""

from __future__ import annotations

from typing import Iterable

from portmapctl.core.mapping import MappingConfig
from portmapctl.core.validate import Spelling
from portmapctl.errors import BadInput
from portmapctl.iptables.chains import dnat_chain
from portmapctl.iptables.transaction import Transaction

PROBE_CHAIN = "PORTMAPCTL-CONDITIONS"


def refuse_what_iptables_refuses(
    backend: object, config: MappingConfig, families: Iterable[int], spelling: Spelling
) -> None:
    """BadInput when iptables refuses the entry rules `config`'s conditions are in, in
    one of `families`. A backend that cannot parse without writing (the memory backend
    of tests) is not asked: its write says it, as before. (python-iptables builds the
    rules on a table handle it never commits: IptcBackend.refusal.)"""
    refusal = getattr(backend, "refusal", None)
    if refusal is None:
        return
    for family in families:
        if not (config.conditions_v6 if family == 6 else config.conditions_v4):
            continue
        chain = dnat_chain(config, family)
        if chain is None:
            continue
        probe = Transaction(family)
        probe.new_chain(PROBE_CHAIN)
        for rule in chain.entry_rules:
            probe.append(PROBE_CHAIN, [*rule[:-1], "RETURN"])  # (its `-j NAME` last)
        why = refusal(probe)
        if why is not None:
            raise BadInput(f"invalid {spelling.conditions(family)}: iptables refuses them: {why}")
