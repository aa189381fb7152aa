"""`-p` port ranges (Docker's and podman's `8000-8005:8000-8005`): a mapping per port,
in ascending order, as podman hands them to the plugin; the ranges podman refuses are
bad input here too, in one line."""

from __future__ import annotations

import pytest

from portmapctl.core import validate
from portmapctl.core.mapping import PortMapping
from portmapctl.errors import BadInput
from portmapctl.ops import add_early


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("8080:80", [(8080, 80, "tcp", "")]),
        (
            "8000-8002:9000-9002",
            [(8000, 9000, "tcp", ""), (8001, 9001, "tcp", ""), (8002, 9002, "tcp", "")],
        ),
        ("127.0.0.1:53-54:53-54/udp", [(53, 53, "udp", "127.0.0.1"), (54, 54, "udp", "127.0.0.1")]),
        ("[::1]:8443-8444:443-444/TCP", [(8443, 443, "tcp", "::1"), (8444, 444, "tcp", "::1")]),
        # A range of one port is that port (Docker takes it).
        ("7000-7000:70-70", [(7000, 70, "tcp", "")]),
        ("65534-65535:1-2", [(65534, 1, "tcp", ""), (65535, 2, "tcp", "")]),
    ],
)
def test_a_range_maps_port_by_port_in_ascending_order(spec, expected):
    got = validate.port_specs(spec)
    assert got == tuple(PortMapping(h, c, p, ip) for h, c, p, ip in expected)


@pytest.mark.parametrize(
    "spec, says",
    [
        ("8000-8002:80", "the host and container port ranges have different lengths (3 and 1)"),
        ("8000:80-82", "the host and container port ranges have different lengths (1 and 3)"),
        ("8000-8001:80-82", "different lengths (2 and 3)"),
        ("8002-8000:80-82", "invalid host port range '8002-8000': its end is below its start"),
        ("8000-8002:82-80", "invalid container port range '82-80': its end is below its start"),
        # A bad end names the range it is in: "invalid host port ''" named nothing given.
        ("8000-:80", "invalid host port range '8000-': its end is missing (START-END, e.g."),
        ("-8000:80", "invalid host port range '-8000': its start is missing (START-END, e.g."),
        ("80:8000-", "invalid container port range '8000-': its end is missing"),
        ("-:80", "invalid host port range '-': its start is missing"),
        ("8000--8001:80", "invalid host port range '8000--8001': its end '-8001' must be a number"),
        ("8000-8002-8004:80-82-84", "invalid host port range '8000-8002-8004': its end '8002-"),
        ("65535-65536:1-2", "invalid host port range '65535-65536': its end '65536' must be a nu"),
        ("0-2:1-3", "invalid host port range '0-2': its start '0' must be a number from 1 to 6553"),
        ("8000-x:80", "invalid host port range '8000-x': its end 'x' must be a number from 1 to"),
        # One port (no range) is named as it was.
        ("70000:80", "invalid host port '70000': must be a number from 1 to 65535"),
        ("8000-8002:80-82/xx", "invalid protocol 'xx'"),
    ],
)
def test_a_range_podman_refuses_is_bad_input_in_one_line(spec, says):
    with pytest.raises(BadInput) as raised:
        validate.port_specs(spec)
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


def test_where_one_port_is_wanted_a_range_is_refused():
    assert validate.port_spec("8080:80/udp") == PortMapping(8080, 80, "udp")
    with pytest.raises(BadInput, match="one port, not a range"):
        validate.port_spec("8000-8001:80-81")


@pytest.mark.parametrize(
    "publish, ports",
    [
        (["8000-8002:80-82"], {8000, 8001, 8002}),
        (["127.0.0.1:53-54:53-54/udp", "8080:80"], {53, 54, 8080}),
        # Read leniently (add refuses it): never more than the ports there are.
        (["65530-99999:1-70000"], set(range(65530, 65536))),
    ],
)
def test_the_early_dump_reads_the_host_ports_of_a_range(publish, ports):
    args = ["add", "--network", "n", "--container", "c", "--ip", "10.88.0.5/16"]
    for spec in publish:
        args += ["-p", spec]
    assert add_early._read_line(args) == (frozenset(ports), None, (4,))


def test_the_early_dump_leaves_a_range_it_cannot_read_to_add():
    args = ["add", "--network", "n", "--container", "c", "--ip", "10.88.0.5/16"]
    for spec in ("8000-x:80", "1-999999:1-2", "8000--8001:80"):
        assert add_early._read_line([*args, "-p", spec]) is None, spec


@pytest.mark.parametrize("command", ["add", "check"])
@pytest.mark.parametrize("spec, given", [("8000-:80", "'8000-'"), ("-8000:80", "'-8000'")])
def test_a_range_with_a_missing_end_is_named_as_given_on_the_command_line(command, spec, given):
    """`-p 8000-:80` said "invalid host port '': must be a number from 1 to 65535":
    no port '' was given, and the operator had to guess which -p it was."""
    import pmctl

    args = [command, "--network", "n", "--container", "c", "--ip", "10.88.0.5/16", "-p", spec]
    done = pmctl.run(args, unprivileged=True)
    pmctl.assert_error(done, 2, f"invalid host port range {given}: its ")
