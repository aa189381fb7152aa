"""wanted (the v1.9.1 ADD), planner and the memory fake, against the real plugins' state."""

from __future__ import annotations

import dataclasses
import re

import nftcases
import pytest

from portmapctl.errors import BadInput
from portmapctl.nftables import layout, planner, ruleset
from portmapctl.nftables.access import NftApplyFailed
from portmapctl.nftables.access.memory import MemoryNft
from portmapctl.nftables.node import RETRY_REASONS
from portmapctl.nftables.transaction import OpKind, Transaction
from portmapctl.nftables.wanted import wanted

V191 = [c for c in nftcases.CASES if c.startswith("v191-")]


def _wanted(configs):
    return [w for cfg in configs for f in (4, 6) if (w := wanted(cfg, f)) is not None]


def _bodies(live: ruleset.Ruleset) -> dict:
    """(family, chain) -> rule bodies in order, and base hooks: the ruleset without handles."""
    return {
        (family, name): (chain.base, [r.body for r in table.rules_of(name)])
        for family, table in live.tables.items()
        for name, chain in table.chains.items()
    }


@pytest.mark.parametrize("case", V191)
def test_wanted_is_what_v191_wrote(case: str) -> None:
    """Each live container's rules, in order, are exactly what wanted() generates."""
    live = nftcases.live(case)
    for config in nftcases.live_configs(case):
        for family in (4, 6):
            want = wanted(config, family)
            table = live.table(family)
            if want is None:
                continue
            assert table is not None
            mine = [r.body for r in table.rules_of("hostports") if r.comment == config.container_id]
            assert mine == list(want.hostports)
            masq = [
                r.body for r in table.rules_of("masquerading") if r.comment == config.container_id
            ]
            assert masq == list(want.masquerading)


@pytest.mark.parametrize("case", V191)
def test_setup_from_nothing_gives_the_plugins_ruleset(case: str) -> None:
    """One setup transaction of every live container == the plugin's ADDs, one by one."""
    configs = nftcases.live_configs(case)
    fake = MemoryNft()
    fake.apply(planner.setup(ruleset.EMPTY, _wanted(configs)))
    expected = _bodies(nftcases.live(case))
    got = _bodies(fake.read())
    if case == "v191-after-del":
        # The plugin's DEL leaves the deleted container's family (IPv6) behind, empty.
        got.update({k: v for k, v in expected.items() if k[0] == 6})
    assert got == expected


@pytest.mark.parametrize("case", nftcases.CASES)
def test_plugin_state_needs_no_setup(case: str) -> None:
    """What any upstream version left is healthy: setup adds nothing.

    Only `upgrade` and the v1.6/v1.7 cases differ: an unused hostports_all is created as
    the v1.9.1 ADD would; and in `upgrade` v1.7.1's host-IP rule, left in
    hostip_hostports, goes to hostports, where v1.9.1's CHECK counts it (that CHECK of
    old1 fails there, FACTS.md): first in it (`insert`), as hostports_all reached it
    before every rule of hostports.
    """
    live = nftcases.live(case)
    txn = planner.setup(live, _wanted(nftcases.live_configs(case)))
    lines = txn.render().splitlines()
    if case == "upgrade":
        moved = 'insert rule ip cni_hostport hostports ip daddr 127.0.0.1 tcp dport 9090 dnat to 10.88.0.6:90 comment "old1"'
        assert moved in lines, lines
        lines.remove(moved)
    assert all(line.startswith("add chain") and "hostports_all" in line for line in lines), lines


def test_setup_text_matches_the_plugins_add() -> None:
    """Same commands as FACTS' captured v1.9.1 ADD transaction, the flushes of the base
    chains it creates included (what keeps a concurrent ADD's entry from being doubled),
    as add writes it (Entries.REWRITE), but for the table, made with `create`: a plugin
    ADD that made it meanwhile wrote its container's rules, which add's would double
    (_guard_plugin_add). check --repair (KEEP) makes everything it found missing with
    `create`."""
    config = nftcases.config_of(nftcases.steps("v191-basic")[0])
    text = planner.setup(ruleset.EMPTY, _wanted([config]), planner.Entries.REWRITE).render()
    repair = planner.setup(ruleset.EMPTY, _wanted([config])).render()
    assert repair == re.sub(r"^add (table|chain) ", r"create \1 ", text, flags=re.M)
    assert text.splitlines()[:18] == [
        'create table ip cni_hostport { comment "CNI portmap plugin" ; }',
        "add chain ip cni_hostport hostports",
        "add chain ip cni_hostport hostip_hostports",
        "add chain ip cni_hostport hostports_all",
        "flush chain ip cni_hostport hostports_all",
        "add rule ip cni_hostport hostports_all jump hostip_hostports",
        "add rule ip cni_hostport hostports_all jump hostports",
        "add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }",
        "flush chain ip cni_hostport prerouting",
        "add rule ip cni_hostport prerouting fib daddr type local jump hostports_all",
        "add chain ip cni_hostport output { type nat hook output priority -100 ; }",
        "flush chain ip cni_hostport output",
        "add rule ip cni_hostport output fib daddr type local jump hostports_all",
        "add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }",
        'add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.88.0.5:80 comment "aaaa1111"',
        'add rule ip cni_hostport hostports udp dport 5353 dnat to 10.88.0.5:53 comment "aaaa1111"',
        "add rule ip cni_hostport masquerading ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade"
        ' comment "aaaa1111"',
        "add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade"
        ' comment "aaaa1111"',
    ]
    assert "add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [fd00:88::5]:80" in text


def test_teardown_is_the_plugins_del() -> None:
    """FACTS: v1.9.1 DEL deletes handles 11-14 (IPv4) and 11-13 (IPv6) of aaaa1111."""
    text = planner.teardown(nftcases.live("v191-basic"), {"aaaa1111"}).render()
    assert text.splitlines() == [
        "delete rule ip cni_hostport hostports handle 11",
        "delete rule ip cni_hostport hostports handle 12",
        "delete rule ip cni_hostport masquerading handle 13",
        "delete rule ip cni_hostport masquerading handle 14",
        "delete rule ip6 cni_hostport hostports handle 11",
        "delete rule ip6 cni_hostport hostports handle 12",
        "delete rule ip6 cni_hostport masquerading handle 13",
    ]


def test_teardown_gives_the_plugins_del_result() -> None:
    before = MemoryNft(nftcases.live("v191-several"))
    before.apply(planner.teardown(before.read(), {"aaaa1111"}))
    # after-del: A, B added, A deleted; compare the rules of bbbb2222 only and no aaaa1111.
    left = before.read()
    assert not any(
        r.comment == "aaaa1111"
        for t in left.tables.values()
        for c in t.chains
        for r in t.rules_of(c)
    )
    # Tables and base chains stay.
    assert set(left.tables[6].chains) == set(nftcases.live("v191-several").tables[6].chains)


def test_teardown_reaches_v17_host_ip_rules() -> None:
    live = nftcases.live("v171-hostip")
    text = planner.teardown(live, {"old1"}).render()
    assert "hostip_hostports handle" in text
    fake = MemoryNft(live)
    fake.apply(planner.teardown(live, {"old1"}))
    assert not fake.read().tables[4].rules_of("hostip_hostports")


def test_repair_after_flush_table() -> None:
    """`nft flush table ip cni_hostport` empties every chain: setup restores the plugin's IPv4."""
    case = "v191-several"
    fake = MemoryNft(nftcases.live(case))
    fake.flush_table(4)
    configs = nftcases.live_configs(case)
    txn = planner.setup(fake.read(), _wanted(configs))
    assert "flush chain ip cni_hostport prerouting" in txn.render()
    assert not any(op.family == 6 for op in txn.ops)
    fake.apply(txn)
    assert _bodies(fake.read()) == _bodies(nftcases.live(case))
    assert not planner.setup(fake.read(), _wanted(configs))


def test_repair_after_delete_table() -> None:
    fake = MemoryNft(nftcases.live("v191-basic"))
    fake.delete_table(6)
    configs = nftcases.live_configs("v191-basic")
    fake.apply(planner.setup(fake.read(), _wanted(configs)))
    assert _bodies(fake.read()) == _bodies(nftcases.live("v191-basic"))


def test_stale_plan_fails_whole() -> None:
    """A teardown planned before someone else's DEL fails whole: re-plan, never force."""
    fake = MemoryNft(nftcases.live("v191-several"))
    plan = planner.teardown(fake.read(), {"aaaa1111", "bbbb2222"})
    fake.apply(planner.teardown(fake.read(), {"bbbb2222"}))  # the plugin's DEL meanwhile
    before = fake.read()
    with pytest.raises(NftApplyFailed) as err:
        fake.apply(plan)
    assert err.value.reason == "No such file or directory"
    assert fake.read() == before
    fake.apply(planner.teardown(fake.read(), {"aaaa1111", "bbbb2222"}))


def test_entry_with_foreign_conditions_is_healthy() -> None:
    """Conditions are last-writer-wins: another network's conditions are not a fault."""
    live = nftcases.live("v191-several")
    config = nftcases.config_of(nftcases.steps("v191-several")[0])  # no conditions
    assert not planner.setup(live, _wanted([config]))


@pytest.mark.parametrize(
    ("condition", "refused"),
    [
        ("ip saddr { 10.0.0.0/8, 192.168.0.0/16 }", False),
        ("ip saddr { 10.0.0.0/8 } tcp dport { 80, 443 }", False),
        ('iifname { "eth0", "eth1" }', False),
        ('iifname != "veth*"', False),
        # A quoted string is one token to nft, whatever it holds (an interface name with
        # `+`, a cgroup path); only a quote, backslash or space in it is refused.
        ('iifname "eth+0"', False),
        ('iifname "a#b;c" ip saddr { 10.0.0.0/8 }', False),
        ('socket cgroupv2 level 2 "kubepods.slice/kubepods-besteffort.slice"', False),
        ('iifname "a\\" ; flush ruleset', True),
        ('iifname "eth 0"', True),
        ('iifname "x" ; flush ruleset ; "y"', True),
        ('iifname "veth*" ; flush ruleset', True),
        ("ip saddr { 10.0.0.0/8", True),
        ("ip saddr 10.0.0.0/8 }", True),
        ("ip saddr } 10.0.0.0/8 {", True),
        ("ip saddr { 10.0.0.0/8 ; flush ruleset }", True),
    ],
)
def test_a_condition_may_hold_braces_in_pairs(condition: str, refused: bool) -> None:
    """An anonymous set opens and closes inside the rule, as v1.9.1 writes it
    (tests/interop/test_writes_audit.py); 0.1 refused every brace, and an interface
    name's wildcard."""
    from portmapctl.nftables.transaction import check_condition

    if refused:
        with pytest.raises(BadInput, match="refusing nftables condition"):
            check_condition(condition)
    else:
        assert check_condition(condition) == condition


def test_unsafe_conditions_and_comments_are_refused() -> None:
    config = nftcases.config_of(nftcases.steps("v191-basic")[0])
    bad = config.__class__(
        **{**config.__dict__, "conditions_v4": ("ip saddr 1.2.3.4 ; flush ruleset",)}
    )
    with pytest.raises(BadInput, match="refusing nftables condition"):
        planner.setup(ruleset.EMPTY, _wanted([bad]))
    bad_id = config.__class__(**{**config.__dict__, "container_id": 'x" ; flush ruleset ; "'})
    with pytest.raises(BadInput, match="refusing rule comment"):
        planner.setup(ruleset.EMPTY, _wanted([bad_id]))
    assert Transaction().render() == ""


# --- add (Entries.REWRITE): the node's entry as the plugin's ADD of this container leaves
# it. Every ADD flushes prerouting/output and writes them with its own conditions, and
# v1.9 refills hostports_all: the newest ADD decides. (tests/interop/test_nft_commands.py
# holds the same to the real v1.9.1 ADD, byte for byte.) ---


def _entry_texts(live: ruleset.Ruleset, family: int) -> dict:
    table = live.tables[family]
    return {
        chain: [r.body.text(family) for r in table.rules_of(chain)]
        for chain in ("prerouting", "output", "hostports_all")
    }


V19_ENTRY = {
    "prerouting": ["fib daddr type local jump hostports_all"],
    "output": ["fib daddr type local jump hostports_all"],
    "hostports_all": ["jump hostip_hostports", "jump hostports"],
}


def _added(case: str, config, entries: planner.Entries) -> MemoryNft:
    fake = MemoryNft(nftcases.live(case))
    fake.apply(planner.setup(fake.read(), _wanted([config]), entries))
    return fake


def _new1(config, **changes):
    return dataclasses.replace(config, container_id="new1", **changes)


def test_add_upgrades_a_v17_table_to_the_v19_entry() -> None:
    """v1.7.1's two jumps in prerouting/output give way to v1.9.1's one; the old host-IP
    rules stay in hostip_hostports, which hostports_all reaches."""
    old = nftcases.config_of(nftcases.steps("v171-hostip")[0])
    fake = _added("v171-hostip", _new1(old, ports=old.ports[1:2]), planner.Entries.REWRITE)
    live = fake.read()
    for family in (4, 6):
        assert _entry_texts(live, family) == V19_ENTRY
        assert live.tables[family].rules_of("hostip_hostports")
    # check --repair's reading of the same node: the v1.7 entry is healthy, left alone.
    kept = _added("v171-hostip", _new1(old, ports=old.ports[1:2]), planner.Entries.KEEP).read()
    before = nftcases.live("v171-hostip")
    for family in (4, 6):
        for chain in ("prerouting", "output"):
            assert kept.tables[family].rules_of(chain) == before.tables[family].rules_of(chain)


def test_add_writes_its_own_conditions_and_drops_the_last_ones() -> None:
    """v191-several's last ADD left conditions; an add without any removes them (IPv4,
    the family the container has), one with other conditions puts those."""
    plain = nftcases.config_of(nftcases.steps("v191-basic")[0])
    v4_only = _new1(plain, addresses=plain.addresses[:1])
    live = _added("v191-several", v4_only, planner.Entries.REWRITE).read()
    assert _entry_texts(live, 4) == V19_ENTRY
    assert _entry_texts(live, 6) == _entry_texts(nftcases.live("v191-several"), 6)
    other = _new1(v4_only, conditions_v4=("ip saddr 10.0.0.0/8",))
    live = _added("v191-several", other, planner.Entries.REWRITE).read()
    assert _entry_texts(live, 4)["prerouting"] == [
        "ip saddr 10.0.0.0/8 fib daddr type local jump hostports_all"
    ]


@pytest.mark.parametrize("case", nftcases.CASES)
def test_add_twice_changes_nothing_the_second_time(case: str) -> None:
    config = _new1(nftcases.config_of(nftcases.steps("v191-several")[-1]))
    fake = _added(case, config, planner.Entries.REWRITE)
    assert not planner.setup(fake.read(), _wanted([config]), planner.Entries.REWRITE)
    assert not planner.setup(fake.read(), _wanted([config]))  # nor would repair


def test_add_on_the_entry_it_would_write_writes_no_entry() -> None:
    """The plugin rewrites an entry that is already right; we leave it (same listing):
    only prerouting's rule replaced by itself at its own handle, the guard (_guard_plugin_add)."""
    config = _new1(nftcases.config_of(nftcases.steps("v191-basic")[0]))
    live = nftcases.live("v191-basic")
    txn = planner.setup(live, _wanted([config]), planner.Entries.REWRITE)
    entry_ops = [op for op in txn.ops if op.chain in ("prerouting", "output", "hostports_all")]
    assert [op.kind for op in entry_ops] == [OpKind.REPLACE_RULE] * 2  # (one per family)
    fake = MemoryNft(live)
    fake.apply(txn)
    after = fake.read()
    for family in (4, 6):
        for chain in ("prerouting", "output", "hostports_all"):
            assert after.tables[family].rules_of(chain) == live.tables[family].rules_of(chain)


def _plugin_add(config) -> Transaction:
    """The v1.9.1 ADD's own `nft -f` (FACTS): what setup writes from nothing, but with
    `add` throughout: on any table it flushes and rewrites the entry and appends the
    container's rules, whatever is there."""
    made = planner.setup(ruleset.EMPTY, _wanted([config]), planner.Entries.REWRITE)
    return Transaction([dataclasses.replace(op, create=False) for op in made.ops])


@pytest.mark.parametrize("case", ["empty", "v191-basic", "v191-several", "v171-hostip"])
def test_adds_transaction_is_refused_after_a_plugin_add_of_the_same_container(case: str) -> None:
    """The plugin's ADD appends its container's rules without looking: add's plan from
    the read before it appended them again, every rule twice. Its transaction fails
    whole instead (_guard_plugin_add; from no table, an entry add keeps, one it rewrites, a
    v1.7 one), and the plan from a new read writes nothing."""
    config = _new1(nftcases.config_of(nftcases.steps("v191-basic")[0]))
    live = ruleset.EMPTY if case == "empty" else nftcases.live(case)
    txn = planner.setup(live, _wanted([config]), planner.Entries.REWRITE)
    fake = MemoryNft(live)
    fake.apply(_plugin_add(config))
    with pytest.raises(NftApplyFailed) as refused:
        fake.apply(txn)
    assert refused.value.reason in RETRY_REASONS
    assert not planner.setup(fake.read(), _wanted([config]), planner.Entries.REWRITE)


def test_adds_transaction_goes_in_when_nothing_committed_since_its_read() -> None:
    """The guard holds on the table as read: the same transaction, nothing between."""
    config = _new1(nftcases.config_of(nftcases.steps("v191-basic")[0]))
    for live in (ruleset.EMPTY, nftcases.live("v191-several")):
        fake = MemoryNft(live)
        fake.apply(planner.setup(live, _wanted([config]), planner.Entries.REWRITE))
        assert not planner.setup(fake.read(), _wanted([config]), planner.Entries.REWRITE)


def _unordered(live: ruleset.Ruleset) -> dict:
    """_bodies with each chain's rules in no order."""
    return {k: (base, sorted(map(repr, bodies))) for k, (base, bodies) in _bodies(live).items()}


def _lost(case: str, entry: str):
    """`case`'s node with its first container's rules gone (its DEL ran, its entry still
    cached), its entry as `entry` says: "as-read"; "copy": a copy of IPv4 prerouting's
    rule (the repair writes the chain again as read, dedupe); "flushed": prerouting and
    output emptied in both families (only hostports_all's jumps are left to guard by). The fake, that
    container's config and the repair's plan from it."""
    config = nftcases.live_configs(case)[0]
    fake = MemoryNft(nftcases.live(case))
    fake.apply(planner.teardown(fake.read(), {config.container_id}))
    mess = Transaction()
    if entry == "copy":
        mess.add_rule(4, "prerouting", fake.read().table(4).rules_of("prerouting")[0].body)
    elif entry == "flushed":
        for family in (4, 6):
            mess.flush_chain(family, "prerouting")
            mess.flush_chain(family, "output")
    if mess:
        fake.apply(mess)
    txn = planner.repair(fake.read(), _wanted([config]), {config.container_id}, (4, 6), dedupe=True)
    return fake, config, txn


REPAIRS = [("v191-basic", "as-read"), ("v191-several", "as-read"), ("v171-hostip", "as-read"),
           ("v191-basic", "copy"), ("v191-basic", "flushed")]  # fmt: skip


@pytest.mark.parametrize(("case", "entry"), REPAIRS)
def test_repairs_transaction_is_refused_after_a_plugin_add_of_the_container(
    case: str, entry: str
) -> None:
    """check --repair of a cached container whose rules are gone, its plugin ADD
    committing between the repair's read and its write: the ADD appended its rules
    without looking, and the repair appended them again (each twice). The repair's
    transaction fails whole instead (_guard_plugin_add: prerouting's entry replaced by
    itself; deleted by handle before dedupe's flush of prerouting; with prerouting and
    output empty, hostports_all's first jump), and the plan from a new read adds
    nothing."""
    fake, config, txn = _lost(case, entry)
    assert any(op.kind is OpKind.ADD_RULE and op.body.comment for op in txn.ops)
    fake.apply(_plugin_add(config))
    with pytest.raises(NftApplyFailed) as refused:
        fake.apply(txn)
    assert refused.value.reason in RETRY_REASONS
    again = planner.repair(fake.read(), _wanted([config]), {config.container_id}, (4, 6))
    assert not [op for op in again.ops if op.kind is OpKind.ADD_RULE and op.body.comment]


@pytest.mark.parametrize(("case", "entry"), REPAIRS)
def test_repairs_guarded_transaction_goes_in_when_nothing_committed_since_its_read(
    case: str, entry: str
) -> None:
    """The guard holds on the table as read: the container's rules are back, once, the
    entry as the plugin left it (its copy gone, the flushed one written again)."""
    fake, config, txn = _lost(case, entry)
    before = fake.read()
    fake.apply(txn)
    after = fake.read()
    # (Every rule once, as the plugin left them; the container's appended, as its ADD does.)
    assert _unordered(after) == _unordered(nftcases.live(case))
    if entry == "as-read":  # (the entry kept its handle: replaced by itself)
        assert after.table(4).rules_of("prerouting") == before.table(4).rules_of("prerouting")


@pytest.mark.parametrize("case", nftcases.CASES)
def test_nothing_any_plugin_version_wrote_is_unwanted(case: str) -> None:
    """check's `extra-rules` and repair's deletes: none on what the plugins left (the
    v1.6/v1.7 host-IP rules in hostip_hostports included)."""
    live = nftcases.live(case)
    configs = nftcases.live_configs(case)
    ids = {c.container_id for c in configs}
    for family in (4, 6):
        want = [w for w in _wanted(configs) if w.family == family]
        assert planner.unwanted(live.table(family), want, ids) == []
    # (In `upgrade` v1.7.1's host-IP rule is moved, not copied, to hostports.)
    moved = [r for f in (4, 6) for r in layout.misplaced(live, f, _wanted(configs), ids)]
    assert [(r.chain, r.comment) for r in moved] == (
        [("hostip_hostports", "old1")] if case == "upgrade" else []
    )
    deletes = [(r.family, r.chain, r.handle, r.body) for r in moved]
    ops = planner.repair(live, _wanted(configs), ids, (4, 6)).ops
    assert [(o.family, o.chain, o.handle, o.body) for o in ops[: len(deletes)]] == deletes
    # The move appends to hostports: guarded (_guard_plugin_add), prerouting's entry
    # replaced by itself; nothing written, nothing guarded.
    guards = [o for o in ops if o.kind is OpKind.REPLACE_RULE]
    assert [(o.family, o.chain) for o in guards] == ([(4, "prerouting")] if moved else [])
    assert [o for o in ops[len(deletes) :] if o not in guards] == planner.setup(
        live, _wanted(configs)
    ).ops


def test_repair_deletes_a_compared_containers_own_wrong_rules_only() -> None:
    """A wrong DNAT rule of a compared container, put first: deleted by handle, the
    right one added; another container's rules and a rule that is not the plugin's
    kind (an accept carrying the ID) are left."""
    from dataclasses import replace

    case = "v191-several"
    configs = nftcases.live_configs(case)
    mine, other = configs[0].container_id, configs[1].container_id
    fake = MemoryNft(nftcases.live(case))
    [right, *_] = [w for w in _wanted(configs[:1]) if w.family == 4][0].hostports
    wrong = replace(right, action=replace(right.action, addr="10.88.0.99"))
    other_kind = ruleset.Action(ruleset.ActionKind.OTHER, raw="accept")
    accept = ruleset.RuleBody(right.matches, other_kind, mine)
    theirs = replace(wrong, comment=other)
    txn = Transaction()
    for body in (wrong, theirs):
        txn.add_rule(4, "hostports", body)
    fake.apply(txn)
    table = fake.read().table(4)
    [handle] = [r.handle for r in table.rules_of("hostports") if r.body == right]
    gone = Transaction()
    gone.delete_rule(4, "hostports", handle)
    fake.apply(gone)
    live = fake.read()
    live = replace(live, tables={**live.tables, 4: replace(
        live.tables[4],
        rules={**live.tables[4].rules, "hostports": (
            *live.tables[4].rules_of("hostports"),
            ruleset.Rule(4, "hostports", 999, accept),
        )},
    )})  # fmt: skip
    ids = {c.container_id for c in configs[:1]}
    want4 = [w for w in _wanted(configs[:1]) if w.family == 4]
    [found] = planner.unwanted(live.table(4), want4, ids)
    assert found.body == wrong
    txn = planner.repair(live, _wanted(configs[:1]), ids, (4, 6))
    lines = txn.render().splitlines()
    # The right rule goes back where the plugin had it: before the container's next one.
    following = want4[0].hostports[1]
    [at] = [r.handle for r in live.table(4).rules_of("hostports") if r.body == following]
    [entry, *_] = live.table(4).rules_of("prerouting")
    assert lines == [
        f"delete rule ip cni_hostport hostports handle {found.handle}",
        f"insert rule ip cni_hostport hostports position {at} {right.text(4)}",
        # (the guard: a plugin ADD since the read flushed it, _guard_plugin_add)
        f"replace rule ip cni_hostport prerouting handle {entry.handle} {entry.body.text(4)}",
    ]


def test_repair_of_one_network_keeps_the_containers_rules_of_another() -> None:
    """One container on two networks: both networks' rules carry its ID alone. Repairing
    one network's mapping (`also`: the other's wanted rules) deletes only the rule that
    neither makes, and adds nothing of the other network (not the mapping repaired)."""
    configs = nftcases.live_configs("v191-several")
    given = configs[0]
    second = dataclasses.replace(configs[1], network="other", container_id=given.container_id)
    fake = MemoryNft(nftcases.live("v191-several"))
    fake.apply(planner.setup(fake.read(), _wanted([second])))
    [right, *_] = [w for w in _wanted([given]) if w.family == 4][0].hostports
    wrong = dataclasses.replace(right, action=dataclasses.replace(right.action, port=81))
    txn = Transaction()
    txn.add_rule(4, "hostports", wrong)
    fake.apply(txn)
    [elsewhere, *_] = [w for w in _wanted([second]) if w.family == 4][0].hostports
    table = fake.read().table(4)
    [handle] = [r.handle for r in table.rules_of("hostports") if r.body == elsewhere]
    gone = Transaction()
    gone.delete_rule(4, "hostports", handle)  # the other network's own repair's to add
    fake.apply(gone)
    live = fake.read()
    [wrong_handle] = [r.handle for r in live.table(4).rules_of("hostports") if r.body == wrong]
    ids = {given.container_id}
    txn = planner.repair(live, _wanted([given]), ids, (4, 6), also=_wanted([second]))
    assert txn.render().splitlines() == [
        f"delete rule ip cni_hostport hostports handle {wrong_handle}"
    ]
    # Without `also` (the other network's entry not read) its rules stay too: they are
    # for ports and addresses `given` has not (planner.not_wanted's second); they went,
    # before.
    alone = planner.repair(live, _wanted([given]), ids, (4, 6)).render()
    assert alone.count("delete rule") == 1 and f"handle {wrong_handle}" in alone
    _, unclaimed = planner.not_wanted(live.table(4), _wanted([given]), ids)
    assert unclaimed and all(r.body != wrong for r in unclaimed)


def test_only_a_rule_of_a_wanted_mappings_matches_into_its_subnet_is_claimed() -> None:
    """A container's rule none of its wanted rules is goes by --repair (extra-rules) only
    when it has the exact matches of one of them (host IP, protocol, host port) and
    sends into the subnet of the container's address on that network (an old address:
    ADD again without a DEL, with that address's masquerade rules along). The same host
    port sending elsewhere, or for another host IP, may be its other network's mapping,
    whose cache entry is not read: unclaimed, left (the host port alone deleted it)."""
    configs = nftcases.live_configs("v191-several")
    mine = configs[0]  # 8080/tcp -> 10.88.0.5/16
    fake = MemoryNft(nftcases.live("v191-several"))
    [right, *_] = [w for w in _wanted([mine]) if w.family == 4][0].hostports
    old = dataclasses.replace(right, action=dataclasses.replace(right.action, addr="10.88.7.7"))
    other_net = dataclasses.replace(old, action=dataclasses.replace(old.action, addr="10.89.0.9"))
    host_ip = dataclasses.replace(
        old, matches=(ruleset.Match("ip daddr", "==", "192.0.2.1"), *old.matches)
    )
    masq = {
        address: ruleset.RuleBody(
            (ruleset.Match("ip saddr", "==", address), ruleset.Match("ip daddr", "==", address)),
            ruleset.Action(ruleset.ActionKind.MASQUERADE),
            mine.container_id,
        )
        for address in ("10.88.7.7", "10.89.0.9")
    }
    txn = Transaction()
    for body in (old, other_net, host_ip):
        txn.add_rule(4, "hostports", body)
    for body in masq.values():
        txn.add_rule(4, "masquerading", body)
    fake.apply(txn)
    wants = [w for w in _wanted([mine]) if w.family == 4]
    table = fake.read().table(4)

    unwanted, unclaimed = planner.not_wanted(table, wants, {mine.container_id})
    assert [r.body for r in unwanted] == [old]  # (its masquerade: host_ip sends there too)
    assert {r.body for r in unclaimed} == {other_net, host_ip, *masq.values()}
    # Without the host-IP rule the old address's masquerade goes with its DNAT rule;
    # the other network's stays.
    [handle] = [r.handle for r in table.rules_of("hostports") if r.body == host_ip]
    gone = Transaction()
    gone.delete_rule(4, "hostports", handle)
    fake.apply(gone)
    unwanted, unclaimed = planner.not_wanted(fake.read().table(4), wants, {mine.container_id})
    assert [r.body for r in unwanted] == [old, masq["10.88.7.7"]]
    assert [r.body for r in unclaimed] == [other_net, masq["10.89.0.9"]]


def test_repair_in_a_v17_table_writes_what_v17_wrote() -> None:
    """check --repair keeps a working v1.6/v1.7 entry; what it re-creates there goes
    where that plugin's ADD puts it: host-IP rules in hostip_hostports (v1.7.1's CHECK
    counts them there), no hostports_all. 0.1 put them in hostports and added an empty,
    unreached hostports_all, and v1.7.1's CHECK of the container then failed."""
    case = "v171-hostip"
    fake = MemoryNft(nftcases.live(case))
    fake.apply(planner.teardown(fake.read(), {"old1"}))
    fake.apply(planner.setup(fake.read(), _wanted(nftcases.live_configs(case))))
    repaired = _bodies(fake.read())
    for (family, chain), (_base, bodies) in _bodies(nftcases.live(case)).items():
        # (Re-created rules come after the ones left, as a plugin ADD appends them.)
        assert sorted(map(str, repaired[(family, chain)][1])) == sorted(map(str, bodies)), chain
    assert repaired.keys() == _bodies(nftcases.live(case)).keys()


# --- check --repair in a table of v1.6/v1.7's layout whose entry was lost: the layout
# is told from what is left on the node (no hostports_all chain, host-IP rules in
# hostip_hostports), and what comes back is what that plugin's ADD wrote. ---


@pytest.mark.parametrize("case", ["v162-hostip", "v171-hostip"])
@pytest.mark.parametrize("family", [4, 6])
def test_repair_after_flush_table_of_a_v16_v17_node_gives_back_its_own_layout(
    case: str, family: int
) -> None:
    """`nft flush table` on a v1.6/v1.7 node: the chains stay, none of them hostports_all.
    0.1 wrote v1.9's entry, hostports_all and host-IP rules in hostports there (the node's
    own CHECK then failed for a host-IP container: `missing hostport rules in
    "hostip_hostports" chain`)."""
    fake = MemoryNft(nftcases.live(case))
    fake.flush_table(family)
    configs = nftcases.live_configs(case)
    fake.apply(planner.setup(fake.read(), _wanted(configs)))
    assert _bodies(fake.read()) == _bodies(nftcases.live(case))
    assert not planner.setup(fake.read(), _wanted(configs))


def test_repair_of_one_lost_entry_chain_of_a_v17_node_writes_v17s_entry() -> None:
    """prerouting lost alone: output's v1.7 entry says the layout; prerouting gets v1.7's
    two jumps with the container's conditions, not v1.9's fib rule and hostports_all."""
    case = "v171-hostip"
    live = nftcases.live(case)
    configs = nftcases.live_configs(case)
    fake = MemoryNft(live)
    fake.apply(_flushed(4, "prerouting"))
    text = planner.setup(fake.read(), _wanted(configs)).render()
    assert "hostports_all" not in text, text
    fake.apply(planner.setup(fake.read(), _wanted(configs)))
    assert _bodies(fake.read()) == _bodies(live)


def _flushed(family: int, chain: str) -> Transaction:
    txn = Transaction()
    txn.flush_chain(family, chain)
    return txn


def test_layout_is_told_from_the_node() -> None:
    """A working entry decides; with none, the hostports_all chain (v1.9 ADD always makes
    it), or else a host-IP rule in hostports (only v1.9 puts one there); a family without
    its table follows the other; no table at all: v1.9."""
    v16, v19 = layout.Layout.V16, layout.Layout.V19
    assert layout.layout(ruleset.EMPTY, 4) is v19
    assert layout.layout(nftcases.live("v171-hostip"), 6) is v16
    assert layout.layout(nftcases.live("v191-several"), 4) is v19
    # An upgraded node: v1.9's entry, a v1.7 host-IP rule left in hostip_hostports.
    assert layout.layout(nftcases.live("upgrade"), 4) is v19
    for case, expected in (("v171-hostip", v16), ("v191-several", v19)):
        fake = MemoryNft(nftcases.live(case))
        fake.flush_table(4)
        assert layout.layout(fake.read(), 4) is expected, case
        fake.delete_table(4)
        assert layout.layout(fake.read(), 4) is expected, case


@pytest.mark.parametrize("family", [4, 6])
def test_repair_after_delete_table_of_a_v17_node_follows_the_other_familys_table(
    family: int,
) -> None:
    """One family's table deleted on a v1.7 node: the other family's table tells the
    layout, and the re-created table is v1.7.1's (0.1 made it v1.9's: host-IP rules in
    hostports, where v1.7.1's CHECK does not count them)."""
    case = "v171-hostip"
    fake = MemoryNft(nftcases.live(case))
    fake.delete_table(family)
    fake.apply(planner.setup(fake.read(), _wanted(nftcases.live_configs(case))))
    assert _bodies(fake.read()) == _bodies(nftcases.live(case))


@pytest.mark.parametrize("case", V191)
def test_superseded_are_a_containers_other_rules_of_its_address(case: str) -> None:
    """A container's rules as the plugin wrote them supersede nothing of their own; given
    other ports for the same address, every one of its rules for that address that the
    new ports have not is superseded (add deletes them), its masquerade rules kept while
    SNAT is on, and no other container's rule."""
    live = nftcases.live(case)
    for config in nftcases.live_configs(case):
        for family in config.families:
            want = wanted(config, family)
            address = config.address(family)
            if want is None or address is None:
                continue
            ip = address.ip.compressed
            assert planner.superseded(live, want, ip) == []
            moved = dataclasses.replace(want, hostports=())
            gone = planner.superseded(live, moved, ip)
            table = live.table(family)
            assert table is not None
            assert [r.body for r in gone] == [
                r.body
                for r in table.rules_of("hostports")
                if r.comment == config.container_id and r.body.action.addr == ip
            ]
