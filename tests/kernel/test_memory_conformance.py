"""The memory backend is held to real iptables (nf_tables and legacy): every scenario of
tests/memory_cases.py, step by step, gives the same table through both, or is refused
by both with the table left as it was."""

from __future__ import annotations

import pytest
import realplugin as rp
from memory_cases import scenarios

from portmapctl.errors import ApplyFailed
from portmapctl.host import netns
from portmapctl.iptables.access.memory import MemoryBackend
from portmapctl.iptables.access.restore import RestoreBackend

SCENARIOS = scenarios()


@pytest.mark.netns
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_memory_backend_does_what_iptables_does(iptables_mode, name):
    ns = rp.create_netns("pmt-mem")
    try:
        with netns.entered(ns):
            real = RestoreBackend(iptables_mode)
            memory = MemoryBackend({f: real.read(f) for f in (4, 6)})
            outcomes = []
            for step in SCENARIOS[name]:
                for family in (4, 6):
                    txn = step(real.read(family))
                    if not txn:
                        continue
                    results = []
                    for backend in (real, memory):
                        try:
                            backend.apply(txn)
                            results.append("applied")
                        except ApplyFailed:
                            results.append("refused")
                    assert results[0] == results[1], (family, txn.render(), results)
                    outcomes.append(results[0])
                    assert memory.read(family) == real.read(family), txn.render()
        assert outcomes, "the scenario applied nothing: it tests nothing"
        if name.startswith("refused"):
            assert "refused" in outcomes
        else:
            assert "refused" not in outcomes
    finally:
        rp.delete_netns(ns)
