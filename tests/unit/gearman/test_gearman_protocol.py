"""Packet codec: golden bytes, round trips, decoder fuzzing; admin text parsing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fuzzing import examples

from imgworker.gearman.errors import ProtocolError
from imgworker.gearman.protocol import ARGC, REQ, RES, Decoder, P, encode, parse_address, parse_status, parse_workers

GOLDEN: list[tuple[bytes, int, tuple[bytes, ...], bytes]] = [
    (REQ, P.CAN_DO, (b"resize",), b"\0REQ\0\0\0\x01\0\0\0\x06resize"),
    (REQ, P.CAN_DO_TIMEOUT, (b"f", b"30"), b"\0REQ\0\0\0\x17\0\0\0\x04f\x0030"),
    (REQ, P.CANT_DO, (b"f",), b"\0REQ\0\0\0\x02\0\0\0\x01f"),
    (REQ, P.RESET_ABILITIES, (), b"\0REQ\0\0\0\x03\0\0\0\0"),
    (REQ, P.PRE_SLEEP, (), b"\0REQ\0\0\0\x04\0\0\0\0"),
    (RES, P.NOOP, (), b"\0RES\0\0\0\x06\0\0\0\0"),
    (REQ, P.SUBMIT_JOB, (b"f", b"u", b"d\0x"), b"\0REQ\0\0\0\x07\0\0\0\x07f\0u\0d\0x"),
    (REQ, P.SUBMIT_JOB_BG, (b"f", b"", b"d"), b"\0REQ\0\0\0\x12\0\0\0\x04f\0\0d"),
    (REQ, P.SUBMIT_JOB_HIGH, (b"f", b"", b""), b"\0REQ\0\0\0\x15\0\0\0\x03f\0\0"),
    (REQ, P.SUBMIT_JOB_LOW, (b"f", b"", b""), b"\0REQ\0\0\0\x21\0\0\0\x03f\0\0"),
    (REQ, P.SUBMIT_JOB_HIGH_BG, (b"f", b"", b""), b"\0REQ\0\0\0\x20\0\0\0\x03f\0\0"),
    (REQ, P.SUBMIT_JOB_LOW_BG, (b"f", b"", b""), b"\0REQ\0\0\0\x22\0\0\0\x03f\0\0"),
    (RES, P.JOB_CREATED, (b"H:a:1",), b"\0RES\0\0\0\x08\0\0\0\x05H:a:1"),
    (REQ, P.GRAB_JOB_UNIQ, (), b"\0REQ\0\0\0\x1e\0\0\0\0"),
    (RES, P.NO_JOB, (), b"\0RES\0\0\0\x0a\0\0\0\0"),
    (RES, P.JOB_ASSIGN_UNIQ, (b"H:a:1", b"f", b"u", b"\0"), b"\0RES\0\0\0\x1f\0\0\0\x0bH:a:1\0f\0u\0\0"),
    (REQ, P.WORK_STATUS, (b"H", b"1", b"2"), b"\0REQ\0\0\0\x0c\0\0\0\x05H\x001\x002"),
    (REQ, P.WORK_COMPLETE, (b"H", b"r"), b"\0REQ\0\0\0\x0d\0\0\0\x03H\0r"),
    (REQ, P.WORK_FAIL, (b"H",), b"\0REQ\0\0\0\x0e\0\0\0\x01H"),
    (REQ, P.WORK_DATA, (b"H", b"d"), b"\0REQ\0\0\0\x1c\0\0\0\x03H\0d"),
    (REQ, P.WORK_WARNING, (b"H", b"w"), b"\0REQ\0\0\0\x1d\0\0\0\x03H\0w"),
    (REQ, P.WORK_EXCEPTION, (b"H", b"e"), b"\0REQ\0\0\0\x19\0\0\0\x03H\0e"),
    (REQ, P.GET_STATUS, (b"H",), b"\0REQ\0\0\0\x0f\0\0\0\x01H"),
    (RES, P.STATUS_RES, (b"H", b"1", b"0", b"3", b"4"), b"\0RES\0\0\0\x14\0\0\0\x09H\x001\x000\x003\x004"),
    (REQ, P.SET_CLIENT_ID, (b"me",), b"\0REQ\0\0\0\x16\0\0\0\x02me"),
    (REQ, P.OPTION_REQ, (b"exceptions",), b"\0REQ\0\0\0\x1a\0\0\0\x0aexceptions"),
    (RES, P.OPTION_RES, (b"exceptions",), b"\0RES\0\0\0\x1b\0\0\0\x0aexceptions"),
    (RES, P.ERROR, (b"ERR", b"msg"), b"\0RES\0\0\0\x13\0\0\0\x07ERR\0msg"),
    (REQ, P.ECHO_REQ, (b"x",), b"\0REQ\0\0\0\x10\0\0\0\x01x"),
]


@pytest.mark.parametrize(("magic", "ptype", "args", "wire"), GOLDEN, ids=[P(g[1]).name for g in GOLDEN])
def test_golden_bytes_and_round_trip(magic: bytes, ptype: int, args: tuple[bytes, ...], wire: bytes) -> None:
    assert encode(ptype, *args, magic=magic) == wire
    (pkt,) = Decoder().feed(wire)
    assert (pkt.magic, pkt.type, pkt.args) == (magic, ptype, args)


def test_all_type_numbers_are_the_protocol_ones() -> None:
    assert len(ARGC) == 41 and set(ARGC) == set(range(1, 43)) - {5}
    assert (P.GRAB_JOB_UNIQ, P.JOB_ASSIGN_UNIQ, P.STATUS_RES_UNIQUE) == (30, 31, 42)


def test_decoder_byte_by_byte_and_batched() -> None:
    wire = b"".join(g[3] for g in GOLDEN)
    d = Decoder()
    got = [p for i in range(len(wire)) for p in d.feed(wire[i : i + 1])]
    assert [p.args for p in got] == [g[2] for g in GOLDEN]
    assert [p.args for p in Decoder().feed(wire)] == [g[2] for g in GOLDEN]
    assert d.pending == 0


def test_last_argument_keeps_nuls() -> None:
    data = bytes(range(256)) * 3
    (pkt,) = Decoder().feed(encode(P.WORK_COMPLETE, b"H:x:1", data))
    assert pkt.args == (b"H:x:1", data)


@pytest.mark.parametrize(
    "wire",
    [
        b"\0XYZ\0\0\0\x01\0\0\0\0",  # bad magic
        b"\0REQ\0\0\0\x05\0\0\0\0",  # type 5 is unused
        b"\0REQ\0\0\0\xff\0\0\0\0",  # unknown type
        b"\0REQ\0\0\0\x01\x7f\0\0\0",  # 2 GiB body announced
        b"\0REQ\0\0\0\x0d\0\0\0\x01H",  # WORK_COMPLETE with one argument
        b"\0RES\0\0\0\x06\0\0\0\x01x",  # NOOP with a body
    ],
)
def test_decoder_rejects(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder(max_size=1024).feed(wire)


def test_oversized_rejected_from_header_alone() -> None:
    d = Decoder(max_size=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        d.feed(struct.pack(">4sII", REQ, P.SUBMIT_JOB, 101))


@settings(max_examples=examples(400), deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    d = Decoder(max_size=256)
    try:
        for i in range(0, len(data), 7):
            d.feed(data[i : i + 7])
    except ProtocolError:
        return
    # No error: whatever is left must be an incomplete frame, bounded by header + max size.
    assert d.pending < 12 + 256


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(GOLDEN), st.integers(min_value=0, max_value=40))
def test_fuzz_truncated_frames_wait(golden: tuple[bytes, int, tuple[bytes, ...], bytes], cut: int) -> None:
    wire = golden[3]
    cut = min(cut, len(wire) - 1)
    d = Decoder()
    assert d.feed(wire[:cut]) == []  # incomplete: waits for more
    (pkt,) = d.feed(wire[cut:])
    assert pkt.args == golden[2]


def test_admin_parsers() -> None:
    st_ = parse_status("resize\t3\t1\t2\nup\t0\t0\t0\n")
    assert [(s.name, s.queued, s.running, s.available_workers) for s in st_] == [
        ("resize", 3, 1, 2),
        ("up", 0, 0, 0),
    ]
    ws = parse_workers("25 127.0.0.1 - :\n26 ::1 host-1 : up resize\n")
    assert ws[0].functions == () and ws[1].address == "::1" and ws[1].client_id == "host-1"
    assert ws[1].functions == ("up", "resize")
    with pytest.raises(ProtocolError):
        parse_status("garbage line")


def test_parse_address() -> None:
    assert parse_address("10.0.0.1:4731") == ("10.0.0.1", 4731)
    assert parse_address("gm") == ("gm", 4730)
    assert parse_address("[::1]:5000") == ("::1", 5000)
