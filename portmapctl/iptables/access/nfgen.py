"""The nf_tables ruleset generation: a number the kernel moves with every commit in a
network namespace. RestoreBackend reads it before and after each iptables-nft-save:
when both agree, nothing committed while the table was read, and the table is stamped
with it (NatTable.generation). gc's removal is then sent as a batch the kernel applies
only at that generation (nfnl_batch.py). Kept apart from nfnl_batch so that reading a
table costs one import of `socket` (1 ms) and two round trips (0.1 ms), no more.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import List, Optional, Sequence, Tuple

from portmapctl.host import netlink as nl
from portmapctl.host import settings

SUBSYS_NFTABLES = 10
_NFT_MSG_NEWGEN, _NFT_MSG_GETGEN = 15, 16
_BATCH_BEGIN, _BATCH_END = 0x10, 0x11  # NFNL_MSG_BATCH_BEGIN / _END
_BATCH_GENID = 1  # NFNL_BATCH_GENID
_NFTA_GEN_ID = 1
_SOL_NETLINK, _NETLINK_CAP_ACK = 270, 10
_BE32 = struct.Struct("!I")


def message(kind: int, flags: int, family: int, seq: int, body: bytes, res_id: int = 0) -> bytes:
    """One netfilter netlink message: header, nfgenmsg, then `body` (attributes)."""
    payload = nl.NFGENMSG.pack(family, 0, res_id) + body
    return nl.HEADER.pack(nl.HEADER.size + len(payload), kind, flags, seq, 0) + payload


def nftables(msg: int) -> int:
    """The message type of nf_tables message `msg` (NFT_MSG_*)."""
    return (SUBSYS_NFTABLES << 8) | msg


# Seconds to wait for the kernel's answer: it answers within the send (a batch is
# handled in the sender's system call), so only a lost answer ever waits this long.
ANSWER_TIMEOUT = 30.0


def open_socket() -> socket.socket:
    """A netfilter netlink socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        sock.bind((0, 0))
        # Errors come back without the request they answer: a refused batch of 10,000
        # messages then still fits the receive buffer.
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
    except OSError:
        sock.close()
        raise
    return sock


def batches_on() -> bool:
    """Whether gc's removal and add's write may go as nf_tables batches (nfnl_batch.py,
    nfnl_add.py say why they do by default); PORTMAPCTL_NFT_BATCH=0 sends both through
    iptables-restore, as every other change goes."""
    return settings.NFT_BATCH.value()


def following(generation: int) -> int:
    """The generation one commit after `generation` makes (the kernel skips 0)."""
    return (generation + 1) & 0xFFFFFFFF or 1


def generation(settled: bool = True) -> Optional[int]:
    """The current network namespace's ruleset generation; `settled`: with no commit
    under way (settled_at), asked again up to three times when one was. None when it
    cannot be asked (no nf_tables, not allowed) or commits kept it moving."""
    try:
        with open_socket() as sock:
            for attempt in range(3):
                found = ask(sock, 1 + 4 * attempt)
                if not settled or settled_at(sock, found, 2 + 4 * attempt):
                    return found
            return None
    except OSError:
        return None


def settled_at(sock: socket.socket, generation: int, seq: int) -> bool:
    """Whether the ruleset is at `generation` with no commit under way, so that what is
    read from now on shows that generation until it moves. A commit moves the number
    before it makes its changes visible to readers, so a number alone may be ahead of
    what a dump would show; the kernel answers an (empty) batch carrying a generation
    only under its commit mutex, once any commit under way is over. False: it moved.
    (An empty batch commits nothing; a kernel that ignores the number answers yes, and
    whether it does is nfmsg.kernel_checks_generation's question. That an empty batch
    moves nothing, nor sends a notification, is the kernel's early return for an empty
    commit; tests/kernel/test_nfnl_add.py pins it on the kernel tested.)"""
    sock.send(batch([], generation, seq, seq + 1))
    _now, errors = replies_until(sock, seq + 2)
    if any(number == seq and code == -errno.ERESTART for number, code in errors):
        return False
    if errors:
        raise OSError(-errors[0][1], "the ruleset generation could not be checked")
    return True


def batch(messages: Sequence[bytes], generation: int, begin_seq: int, end_seq: int) -> bytes:
    """`messages` between NFNL_MSG_BATCH_BEGIN (carrying `generation`: the kernel
    refuses the batch unless the ruleset is at it) and NFNL_MSG_BATCH_END."""
    res_id = socket.htons(SUBSYS_NFTABLES)
    genid = nl.nla(_BATCH_GENID, _BE32.pack(generation))
    return b"".join(
        [
            message(_BATCH_BEGIN, nl.NLM_F_REQUEST, socket.AF_UNSPEC, begin_seq, genid, res_id),
            *messages,
            message(_BATCH_END, nl.NLM_F_REQUEST, socket.AF_UNSPEC, end_seq, b"", res_id),
        ]
    )


def ask(sock: socket.socket, seq: int) -> int:
    """The generation now, asked on `sock` (OSError when the kernel refuses)."""
    found, errors = replies_until(sock, seq)
    if errors:
        raise OSError(-errors[0][1], "the ruleset generation could not be read")
    return found


def replies_until(sock: socket.socket, seq: int) -> Tuple[int, List[Tuple[int, int]]]:
    """Ask for the generation (request number `seq`) and read the socket until its
    answer: the generation, and every error (seq, negative errno) that came before.
    The kernel handles a batch within its send, so a batch's errors are all queued
    before the answer to a question sent after it."""
    sock.send(message(nftables(_NFT_MSG_GETGEN), nl.NLM_F_REQUEST, socket.AF_UNSPEC, seq, b""))
    errors: List[Tuple[int, int]] = []
    while True:
        try:
            buf = sock.recv(1 << 20)
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise
            # Replies were dropped (for a batch only errors are sent, so it failed),
            # the answer to our question perhaps with them: what is queued is read,
            # then the question asked again, under a number of its own.
            errors.append((0, -errno.ENOBUFS))
            _drain(sock)
            seq += 1
            sock.send(
                message(nftables(_NFT_MSG_GETGEN), nl.NLM_F_REQUEST, socket.AF_UNSPEC, seq, b"")
            )
            continue
        offset = 0
        while offset + nl.HEADER.size <= len(buf):
            length, kind, _flags, number, _port = nl.HEADER.unpack_from(buf, offset)
            if length < nl.HEADER.size:
                raise OSError(errno.EBADMSG, "a netlink message shorter than its header")
            if kind == nl.NLMSG_ERROR:
                (code,) = nl.ERRNO.unpack_from(buf, offset + nl.HEADER.size)
                if code:
                    errors.append((number, code))
                    if number == seq:
                        return 0, errors
            elif kind == nftables(_NFT_MSG_NEWGEN) and number == seq:
                return _generation_in(buf, offset, length), errors
            offset += (length + 3) & ~3


def _drain(sock: socket.socket) -> None:
    """Read and drop whatever is queued on the socket now."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
    finally:
        sock.settimeout(timeout)


def _generation_in(buf: bytes, offset: int, length: int) -> int:
    span = nl.attrs(buf, offset + nl.HEADER.size + nl.NFGENMSG.size, offset + length).get(
        _NFTA_GEN_ID
    )
    if span is None or span[1] - span[0] < 4:
        raise OSError(errno.EBADMSG, "a generation message without its number")
    return _BE32.unpack_from(buf, span[0])[0]
