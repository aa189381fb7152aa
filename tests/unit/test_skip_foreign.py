"""parse_save(skip_foreign=True), what the backends read with: another tool's rules
without "CNI-" are kept as placeholders, not split into words. Everything portmapctl
derives from a table must come out the same as from the whole parse: the inventory,
check's problems, gc's teardown (positions included), and the chains' lengths."""

from __future__ import annotations

import pytest
from fixtures_lib import NAMES, configs, save_text

from portmapctl.iptables import inventory
from portmapctl.iptables.chains import DNAT_PREFIX, SNAT_PREFIX, wanted_chains
from portmapctl.iptables.planner import plan_setup, plan_teardown
from portmapctl.iptables.ruleset import parse_save

# kube-proxy's shapes, and a foreign chain that does jump into a portmap chain.
KUBE = """\
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment "default/kubernetes:https -> 10.0.0.2:6443" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-A
-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment "default/kubernetes:https -> 10.0.0.3:6443" -j KUBE-SEP-B
-A KUBE-SEP-A -p tcp -m comment --comment "default/kubernetes:https" -m tcp -j DNAT --to-destination 10.0.0.2:6443
-A KUBE-SEP-B -p tcp -m comment --comment "default/kubernetes:https" -m tcp -j DNAT --to-destination 10.0.0.3:6443
"""
CHAINS = ["KUBE-SERVICES", "KUBE-SVC-NPX46M4PTMTKRN6Y", "KUBE-SEP-A", "KUBE-SEP-B", "MINE"]


def _with_kube(text: str) -> str:
    """The fixture's save with kube-proxy's chains added to its nat table, and a chain
    MINE holding foreign rules around a jump into the first CNI-DN- chain."""
    head, _, rest = text.partition("*nat\n")
    declarations, rules = [], []
    for line in rest.splitlines():
        (declarations if line.startswith(":") else rules).append(line)
    dn = next((d[1:].split()[0] for d in declarations if d.startswith(f":{DNAT_PREFIX}")), None)
    mine = ["-A MINE -p tcp -m tcp --dport 1 -j RETURN"] * 2
    if dn is not None:
        mine.insert(1, f"-A MINE -p tcp -m tcp --dport 2 -j {dn}")
    body = [line for line in rules if line != "COMMIT"]
    return "".join(
        [
            head,
            "*nat\n",
            *(d + "\n" for d in declarations),
            *(f":{c} - [0:0]\n" for c in CHAINS),
            *(r + "\n" for r in body),
            KUBE,
            *(m + "\n" for m in mine),
            "COMMIT\n",
        ]
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", [4, 6])
def test_skipping_foreign_rules_changes_nothing_we_derive(name, family):
    text = _with_kube(save_text(name, family))
    whole = parse_save(text, family)
    quick = parse_save(text, family, skip_foreign=True)
    assert list(quick.chains) == list(whole.chains)
    for chain in whole.chains.values():
        assert len(quick.rules(chain.name)) == len(chain.rules)
        if chain.builtin or chain.name.startswith("CNI-"):
            assert quick.rules(chain.name) == chain.rules
    assert len(quick.rules("KUBE-SEP-A")[0]) == 1  # a placeholder, not words
    built, expected = inventory.build({family: quick}), inventory.build({family: whole})
    assert (built.mappings, built.chains) == (expected.mappings, expected.chains)
    doomed = [n for n in whole.chains if n.startswith((DNAT_PREFIX, SNAT_PREFIX))]
    assert plan_teardown(quick, doomed).render() == plan_teardown(whole, doomed).render()
    for config in configs(name):
        wanted = wanted_chains(config, family)
        assert plan_setup(wanted, quick).render() == plan_setup(wanted, whole).render()
