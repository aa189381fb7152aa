"""normal_form.normal_port_rule / normal_entry_rule build the plugin's rules in saved form
directly (check makes every cached container's chain): each must give exactly what
normalize() gives for the tokens it stands for, errors included, for any values, not
only the plugin's."""

from __future__ import annotations

from typing import List, Optional, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from portmapctl.errors import BadInput
from portmapctl.iptables.normal_form import normal_entry_rule, normal_port_rule, normalize

# Plain values, values normalize() reads specially, and arbitrary text.
ODD = ["!", "-j", "-g", "--src", "--jump", "--match", "-s", "-m", "--dport", "", " "]
PROTOCOLS = st.sampled_from(["tcp", "udp", "sctp", "TCP", "Udp", "icmp", *ODD]) | st.text()
PORTS = st.sampled_from(["80", "8080", "65535", "1:100", *ODD]) | st.text()
ADDRESSES = st.none() | st.sampled_from(
    ["10.88.0.0/16", "10.88.3.4", "127.0.0.1", "0.0.0.0/0", "0.0.0.0", "192.0.2.1/32",
     "fd00::/64", "fd00::5", "::/0", "::", "::1", "10.88.0.5/16", "fd00:88::7/64", "nonsense",
     "300.1.1.1", *ODD]
) | st.text(max_size=12)  # fmt: skip
TOKENS = st.sampled_from(
    ["CNI-HOSTPORT-SETMARK", "DNAT", "--to-destination", "10.88.0.5:80", "[fd00::5]:53",
     "MASQUERADE", "CNI-DN-0123456789abcdef01234", *ODD]
) | st.text(max_size=8)  # fmt: skip
COMMENTS = (
    st.sampled_from(['dnat name: "bench" id: "bench000001"', "x" * 300, "é" * 200, *ODD])
    | st.text()
)


def outcome(build, *args) -> object:
    """The rule built, or the error's message."""
    try:
        return build(*args)
    except BadInput as err:
        return ("BadInput", str(err))


def plugin_port_rule(
    protocol: str,
    port: str,
    destination: Optional[str],
    source: Optional[str],
    target: Sequence[str],
    family: int,
):
    args: List[str] = ["-p", protocol, "--dport", port]
    if destination is not None:
        args += ["-d", destination]
    if source is not None:
        args += ["-s", source]
    return normalize([*args, "-j", *target], family)


@settings(max_examples=1000, deadline=None)
@given(
    PROTOCOLS, PORTS, ADDRESSES, ADDRESSES, st.lists(TOKENS, max_size=4), st.sampled_from([4, 6])
)
def test_port_rules_are_what_normalize_makes(protocol, port, destination, source, target, family):
    assert outcome(normal_port_rule, protocol, port, destination, source, target, family) == (
        outcome(plugin_port_rule, protocol, port, destination, source, target, family)
    )


def plugin_entry_rule(comment: str, protocol: str, ports: str, target: str, family: int):
    args = ["-m", "comment", "--comment", comment, "-m", "multiport", "-p", protocol,
            "--destination-ports", ports, "-j", target]  # fmt: skip
    return normalize(args, family)


@settings(max_examples=1000, deadline=None)
@given(COMMENTS, PROTOCOLS, PORTS, TOKENS, st.sampled_from([4, 6]))
def test_entry_rules_are_what_normalize_makes(comment, protocol, ports, target, family):
    assert outcome(normal_entry_rule, comment, protocol, ports, target, family) == (
        outcome(plugin_entry_rule, comment, protocol, ports, target, family)
    )


def test_the_plugins_own_rules_take_the_direct_way():
    """The plain case is built, not normalized (the point of the builders): the same
    tuple as normalize() gives, for the rules of a dual-stack container."""
    cases = [
        (("tcp", "8080", None, "10.88.0.0/16", ["CNI-HOSTPORT-SETMARK"], 4),
         ("-s", "10.88.0.0/16", "-p", "tcp", "-m", "tcp", "--dport", "8080",
          "-j", "CNI-HOSTPORT-SETMARK")),
        (("udp", "53", "192.0.2.1", "0.0.0.0/0", ["CNI-HOSTPORT-SETMARK"], 4),
         ("-d", "192.0.2.1/32", "-p", "udp", "-m", "udp", "--dport", "53",
          "-j", "CNI-HOSTPORT-SETMARK")),
        (("tcp", "80", None, None, ["DNAT", "--to-destination", "[fd00::5]:80"], 6),
         ("-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination",
          "[fd00::5]:80")),
    ]  # fmt: skip
    for args, saved in cases:
        assert normal_port_rule(*args) == saved == plugin_port_rule(*args)
