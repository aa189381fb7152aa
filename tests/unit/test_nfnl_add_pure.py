"""iptables/access/nfnl_add.py without a kernel: what a batch holds and relies on for a
mapping (planner.plan_blind's change, encoded), what it leaves to iptables-restore,
and the `iptables --version` gate."""

from __future__ import annotations

import pytest

from portmapctl.core import validate
from portmapctl.iptables.access import nfnl_add
from portmapctl.iptables.chains import Chain, dnat_chain_name, wanted_chains


def _config(*specs: str, **options):
    return validate.mapping_config(
        network="n", container_id="c",
        addresses=[validate.interface("10.88.0.5/16"), validate.interface("fd00::5/64")],
        ports=[validate.port_spec(s) for s in specs],
        snat=options.get("snat", True), mark=None, external_setmark_chain=None,
        conditions_v4=None, conditions_v6=None, masq_all=False,
    )  # fmt: skip


def test_a_batch_holds_the_new_chain_and_relies_on_the_shared_rules():
    config = _config("8080:80", "5353:53/udp")
    own = dnat_chain_name(config)
    for family in (4, 6):
        chains = wanted_chains(config, family)
        plan = nfnl_add.plan(family, chains)
        assert plan is not None and plan.family == family
        assert plan.new_chains == (own,)
        dnat = next(c for c in chains if c.name == own)
        assert [chain for chain, _ in plan.rules] == [own] * len(dnat.rules) + [
            "CNI-HOSTPORT-DNAT"
        ] * len(dnat.entry_rules)
        assert set(plan.relies_on) == {
            "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ", "POSTROUTING", "PREROUTING", "OUTPUT",
        }  # fmt: skip
        assert all(len(bodies) == 1 for bodies in plan.relies_on.values())


def test_without_snat_it_relies_on_the_jumps_into_cni_hostport_dnat_only():
    plan = nfnl_add.plan(4, wanted_chains(_config("8080:80", snat=False), 4))
    assert plan is not None and set(plan.relies_on) == {"PREROUTING", "OUTPUT"}


def test_what_it_does_not_write_is_left_to_iptables_restore():
    assert nfnl_add.plan(4, wanted_chains(_config("9:9/sctp"), 4)) is None
    first = Chain("CNI-DN-0123456789abcdef01234", rules=(), entry_chains=("X",),
                  entry_rules=(("-j", "CNI-DN-0123456789abcdef01234"),), prepend_entry=True)  # fmt: skip
    assert nfnl_add.plan(4, [first]) is None


@pytest.mark.parametrize(
    "out, ok",
    [
        ("iptables v1.8.9 (nf_tables)\n", True),
        ("iptables v1.8.9 (legacy)\n", False),
        ("iptables v1.8.10 (nf_tables)\n", False),
        ("iptables v1.8.7 (nf_tables)\n", False),
        ("", False),
        ("iptables v1.8.9 (nf_tables): something else\n", False),
    ],
)
def test_only_the_pinned_iptables_is_written_this_way(out, ok):
    assert nfnl_add.pinned_line(out) is ok
