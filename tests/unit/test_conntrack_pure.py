"""(The tests of this subject that need root are in tests/kernel/test_conntrack.py.)

portmapctl.host.conntrack: the DNAT helper and the netlink codec without a kernel,
then list/delete on real conntrack tables in throwaway network namespaces."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from conntrack_helpers import (  # noqa: F401
    REQUIRE_NETNS,
    make_netns,
    netns,
    run,
    udp,
    unavailable,
)
from hypothesis import given
from hypothesis import strategies as st

from portmapctl.errors import BadInput, HostProblem
from portmapctl.host import conntrack
from portmapctl.host.conntrack import ConntrackEntry, delete, list_udp

# --- the DNAT helper ------------------------------------------------------------------


def test_dnat_tells_translated_entries() -> None:
    assert not udp().dnat
    assert udp(reply_src="10.88.0.5", reply_sport=53).dnat
    assert udp(reply_sport=53).dnat  # same address, other port: still translated


# --- argument checks that need no kernel ---------------------------------------------


@pytest.mark.parametrize(
    ("families", "dports"), [((5,), None), ((4,), [0]), ((4,), [65536]), ((4,), ["53"])]
)
def test_list_rejects_bad_arguments(families: tuple[int, ...], dports: list | None) -> None:
    with pytest.raises(BadInput):
        list_udp(families, dports)


def test_delete_rejects_an_entry_of_the_wrong_family() -> None:
    with pytest.raises(BadInput, match="not an IPv6 UDP entry"):
        delete([udp(family=6)])


def test_empty_requests_do_not_touch_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conntrack, "_session", None)  # would fail if called
    assert list_udp(dports=[]) == []
    assert delete([]) == 0


# --- the codec, checked against pyroute2's own -----------------------------------------


def pyroute2_dump_message(entry: ConntrackEntry, proto: int = socket.IPPROTO_UDP) -> bytes:
    """A dump reply as the kernel sends it, encoded by pyroute2."""
    from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

    version = "V4" if entry.family == 4 else "V6"

    def tuple_attr(src: str, dst: str, sport: int, dport: int) -> dict:
        ip = [[f"CTA_IP_{version}_SRC", src], [f"CTA_IP_{version}_DST", dst]]
        ports = [["CTA_PROTO_SRC_PORT", sport], ["CTA_PROTO_DST_PORT", dport]]
        return {
            "attrs": [
                ["CTA_TUPLE_IP", {"attrs": ip}],
                ["CTA_TUPLE_PROTO", {"attrs": [["CTA_PROTO_NUM", proto], *ports]}],
            ]
        }

    msg = nfct_msg()
    msg["header"]["type"] = 1 << 8
    msg["nfgen_family"] = socket.AF_INET if entry.family == 4 else socket.AF_INET6
    msg["attrs"] = [
        ["CTA_TUPLE_ORIG", tuple_attr(entry.src, entry.dst, entry.sport, entry.dport)],
        [
            "CTA_TUPLE_REPLY",
            tuple_attr(entry.reply_src, entry.reply_dst, entry.reply_sport, entry.reply_dport),
        ],
        ["CTA_STATUS", 8],
        ["CTA_TIMEOUT", 30],
        ["CTA_MARK", 0],
        ["CTA_USE", 1],
    ]
    if entry.ct_id is not None:
        msg["attrs"].append(["CTA_ID", entry.ct_id])
    if entry.zone:
        msg["attrs"].append(["CTA_ZONE", entry.zone])
    msg.encode()
    return bytes(msg.data)


V4_DNAT = udp(reply_src="10.88.0.5", reply_sport=53, ct_id=0xDEADBEEF)
V6_ZONED = udp(family=6, src="2001:db8::7", dst="fd00::1", sport=65535, dport=1, zone=7, ct_id=1)


@pytest.mark.parametrize("entry", [V4_DNAT, V6_ZONED, udp()])
def test_parses_what_pyroute2_encodes(entry: ConntrackEntry) -> None:
    data = pyroute2_dump_message(entry)
    parsed = conntrack._parse_entry(data, 0, len(data), None)
    assert parsed == entry
    assert parsed is not None and parsed.ct_id == entry.ct_id


def test_parse_skips_other_protocols_and_ports() -> None:
    tcp = pyroute2_dump_message(udp(), proto=socket.IPPROTO_TCP)
    assert conntrack._parse_entry(tcp, 0, len(tcp), None) is None
    data = pyroute2_dump_message(udp(dport=5353))
    assert conntrack._parse_entry(data, 0, len(data), {53}) is None


@pytest.mark.parametrize("entry", [V4_DNAT, V6_ZONED, udp()])
def test_delete_message_decodes_in_pyroute2(entry: ConntrackEntry) -> None:
    from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

    msg = nfct_msg(conntrack._delete_message(entry, seq=42))
    msg.decode()
    assert msg["header"]["type"] == (1 << 8) | 2  # ctnetlink, IPCTNL_MSG_CT_DELETE
    assert msg["header"]["sequence_number"] == 42
    assert msg["nfgen_family"] == (socket.AF_INET if entry.family == 4 else socket.AF_INET6)
    orig = msg.get_attr("CTA_TUPLE_ORIG")
    ip, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    version = "V4" if entry.family == 4 else "V6"
    assert ip.get_attr(f"CTA_IP_{version}_SRC") == entry.src
    assert ip.get_attr(f"CTA_IP_{version}_DST") == entry.dst
    assert proto.get_attr("CTA_PROTO_NUM") == socket.IPPROTO_UDP
    assert proto.get_attr("CTA_PROTO_SRC_PORT") == entry.sport
    assert proto.get_attr("CTA_PROTO_DST_PORT") == entry.dport
    assert msg.get_attr("CTA_ID") == entry.ct_id
    assert msg.get_attr("CTA_ZONE") == (entry.zone or None)
    assert msg.get_attr("CTA_TUPLE_REPLY") is None


@given(
    st.builds(
        udp,
        src=st.ip_addresses(v=4).map(str),
        dst=st.ip_addresses(v=4).map(str),
        sport=st.integers(1, 65535),
        dport=st.integers(1, 65535),
        zone=st.integers(0, 65535),
        ct_id=st.none() | st.integers(0, 2**32 - 1),
    )
)
def test_entry_round_trip(entry: ConntrackEntry) -> None:
    data = pyroute2_dump_message(entry)
    assert conntrack._parse_entry(data, 0, len(data), None) == entry


# --- the socket conversation, with a fake netlink socket ---------------------------------


class FakeSocket:
    """Answers each message it is sent with an ack carrying the next code of
    `codes`, in chunks of two messages per recv."""

    codes: list[int] = []
    raise_on_send: OSError | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.pending: list[bytes] = []

    def sendto(self, data: bytes, address: tuple[int, int]) -> int:
        if self.raise_on_send is not None:
            raise self.raise_on_send
        offset = 0
        while offset < len(data):
            length, _, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
            header = struct.pack("=IHHII", 36, 2, 0, seq, 0)
            code = FakeSocket.codes.pop(0)
            self.pending.append(header + struct.pack("=i", code) + data[offset : offset + 16])
            offset += length
        return len(data)

    def recv(self, size: int) -> bytes:
        chunk, self.pending = self.pending[:2], self.pending[2:]
        return b"".join(chunk)

    def close(self) -> None:
        pass


@pytest.fixture
def fake_socket(monkeypatch: pytest.MonkeyPatch) -> type[FakeSocket]:
    monkeypatch.setattr(conntrack, "_socket", FakeSocket)
    monkeypatch.setattr(FakeSocket, "codes", [])
    monkeypatch.setattr(FakeSocket, "raise_on_send", None)
    return FakeSocket


def test_delete_counts_only_real_deletions(
    fake_socket: type[FakeSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conntrack, "_BATCH", 3)
    fake_socket.codes = [0, -errno.ENOENT, 0, 0, -errno.ENOENT, 0, 0]
    assert delete([udp(sport=port) for port in range(1, 8)]) == 5
    assert fake_socket.codes == []


@pytest.mark.parametrize(
    ("code", "hint"),
    [(errno.EPERM, "run as root"), (errno.EINVAL, "modprobe nf_conntrack_netlink")],
)
def test_kernel_refusal_is_a_host_problem(
    fake_socket: type[FakeSocket], code: int, hint: str
) -> None:
    fake_socket.codes = [-code]
    with pytest.raises(HostProblem, match=hint) as caught:
        list_udp(families=(4,), dports=[5353])
    assert "\n" not in str(caught.value)
    fake_socket.codes = [-code]
    with pytest.raises(HostProblem, match=hint):
        delete([udp()])


def test_missing_netlink_family_is_a_host_problem(fake_socket: type[FakeSocket]) -> None:
    fake_socket.raise_on_send = OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
    with pytest.raises(HostProblem, match="cannot list conntrack entries: .*modprobe"):
        list_udp()


class OldKernelSocket(FakeSocket):
    """A kernel before 5.8: CTA_FILTER is not known, every dump request is answered
    with every UDP entry of the family (FakeSocket's recv, two messages at a time)."""

    table = [udp(dport=5353, sport=1), udp(dport=6000, sport=2), udp(dport=7000, sport=3)]

    def sendto(self, data: bytes, address: tuple[int, int]) -> int:
        af = data[struct.calcsize("=IHHII")]
        wanted = 4 if af == socket.AF_INET else 6
        self.pending += [pyroute2_dump_message(e) for e in self.table if e.family == wanted]
        self.pending.append(struct.pack("=IHHII", 20, 3, 0, 1, 0) + b"\0\0\0\0")  # DONE
        return len(data)


def test_a_kernel_that_ignores_the_filter_gives_each_entry_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One dump per port (up to _PORT_DUMPS), each answered whole by a kernel before
    5.8: an entry was listed once per port dumped (counted, and deleted, that often)."""
    monkeypatch.setattr(conntrack, "_socket", OldKernelSocket)
    assert sorted(e.sport for e in conntrack.list_udp((4,), [5353, 6000])) == [1, 2]
    assert sorted(e.sport for e in conntrack.list_udp((4,), None)) == [1, 2, 3]


def test_a_message_not_shaped_as_an_entry_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump message without its reply tuple, or cut short, is passed over (the entry
    kept), and the rest of the dump is read: it was an internal error (KeyError)."""
    whole = pyroute2_dump_message(udp(dport=5353, sport=1))
    no_reply = bytearray(pyroute2_dump_message(udp(dport=5353, sport=2)))
    # CTA_TUPLE_REPLY (2) renamed to an attribute type nobody reads (30).
    offset = 20
    while offset < len(no_reply):
        length, kind = struct.unpack_from("=HH", no_reply, offset)
        if kind & 0x7FFF == 2:
            struct.pack_into("=HH", no_reply, offset, length, (kind & 0x8000) | 30)
        offset += (length + 3) & ~3
    cut = bytearray(pyroute2_dump_message(udp(dport=5353, sport=3)))
    struct.pack_into("=I", cut, 0, 30)  # the header says 30 bytes: the tuple is cut

    class Odd(OldKernelSocket):
        def sendto(self, data: bytes, address: tuple[int, int]) -> int:
            self.pending += [bytes(no_reply), bytes(cut).ljust(32, b"\0")[:32], whole]
            self.pending.append(struct.pack("=IHHII", 20, 3, 0, 1, 0) + b"\0\0\0\0")
            return len(data)

    monkeypatch.setattr(conntrack, "_socket", Odd)
    assert [e.sport for e in conntrack.list_udp((4,), [5353])] == [1]
