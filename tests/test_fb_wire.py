"""Framing: the firmware's COBS against the `cobs` package, the stream decoder, CRC rejection, the host's
sans-IO connection. Property tests use hypothesis, including a run-aware strategy (runs of 253, 254, 255 and
508 non-zero bytes) that plain st.binary() almost never produces: it is what found the lost-zero-after-254-bytes
bug of the prototype."""
from __future__ import annotations

import random

import pytest
from cobs import cobs as ccobs
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import protocol
from firmware_bridge.firmware import wire as W
from firmware_bridge.transport import SerialTransport, open_port

SETTINGS = settings(max_examples=150, deadline=None)

SPECIAL_RUNS = [0, 1, 2, 253, 254, 255, 256, 507, 508, 509, 762]


@st.composite
def run_aware(draw):
    """Bytes made of runs of non-zero bytes, with the run lengths where COBS changes behaviour, and zeros."""
    n_parts = draw(st.integers(1, 5))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    out = bytearray()
    for _ in range(n_parts):
        run = draw(st.sampled_from(SPECIAL_RUNS) | st.integers(0, 600))
        out += bytes(rng.randrange(1, 256) for _ in range(run))
        out += b"\x00" * draw(st.integers(0, 3))
    return bytes(out)


any_data = st.binary(max_size=1200) | run_aware()


@SETTINGS
@given(any_data)
def test_cobs_encode_matches_package(data):
    assert W.cobs_encode(data) == ccobs.encode(data)


@SETTINGS
@given(any_data)
def test_cobs_round_trips_both_ways(data):
    assert W.cobs_decode(ccobs.encode(data)) == data
    assert ccobs.decode(W.cobs_encode(data)) == data
    assert b"\x00" not in W.cobs_encode(data)
    assert len(W.cobs_encode(data)) <= W.encoded_size(len(data))


@pytest.mark.parametrize("run", [253, 254, 255, 508])
@pytest.mark.parametrize("tail", [b"", b"\x00", b"\x00\x05", b"\x00\x00"])
def test_cobs_keeps_the_zero_after_exact_runs(run, tail):
    data = b"\x07" * run + tail
    assert W.cobs_encode(data) == ccobs.encode(data)
    assert W.cobs_decode(W.cobs_encode(data)) == data


def test_cobs_decode_rejects_overrun_and_zero():
    with pytest.raises(ValueError):
        W.cobs_decode(b"\x05ab")
    with pytest.raises(ValueError):
        W.cobs_decode(b"\x02a\x00")


def frames_strategy():
    return st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), any_data.filter(
        lambda d: len(d) <= W.MAX_PAYLOAD)), min_size=1, max_size=4)


@SETTINGS
@given(frames_strategy(), st.data())
def test_decoder_gets_frames_back_across_any_split(frames, data):
    wire_bytes = b"".join(W.encode_frame(t, s, st_, p) for t, s, st_, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire_bytes)), max_size=6)))
    dec = W.Decoder()
    events = []
    prev = 0
    for c in cuts + [len(wire_bytes)]:
        events += dec.feed(wire_bytes[prev:c])
        prev = c
    assert events == [W.Frame(W.VERSION, t, s, st_, p) for t, s, st_, p in frames]
    assert dec.pending() == 0


def test_decoder_every_single_split_point():
    wire_bytes = W.encode_frame(W.T_FLASH_DATA, 7, 0, bytes(range(256)) * 2) + W.encode_frame(W.T_HELLO, 8, 0)
    want = W.Decoder().feed(wire_bytes)
    assert len(want) == 2 and all(isinstance(e, W.Frame) for e in want)
    for cut in range(len(wire_bytes) + 1):
        dec = W.Decoder()
        assert dec.feed(wire_bytes[:cut]) + dec.feed(wire_bytes[cut:]) == want


def _accepts(raw: bytes) -> list:
    dec = W.Decoder()
    return [e for e in dec.feed(raw + b"\x00") if isinstance(e, W.Frame)]


def test_every_single_bit_flip_of_a_frame_is_rejected():
    frame = W.encode_frame(W.T_FLASH_DATA, 42, 0, bytes(range(1, 200)) + b"\x00" * 3 + bytes(range(60)))
    body = frame  # flips anywhere, both delimiters included
    n = 0
    for bit in range(len(body) * 8):
        b = bytearray(body)
        b[bit // 8] ^= 1 << (bit % 8)
        assert _accepts(bytes(b)) == [], f"bit {bit} flipped and the frame was accepted"
        n += 1
    assert n == len(body) * 8


@settings(max_examples=250, deadline=None)
@given(any_data.filter(lambda d: len(d) <= W.MAX_PAYLOAD), st.integers(0, 255), st.data())
def test_two_and_three_bit_flips_are_rejected(payload, seq, data):
    frame = W.encode_frame(W.T_FLASH_DATA, seq, 0, payload)
    k = data.draw(st.integers(1, 3))
    bits = data.draw(st.lists(st.integers(0, len(frame) * 8 - 1), min_size=k, max_size=k, unique=True))
    b = bytearray(frame)
    for bit in bits:
        b[bit // 8] ^= 1 << (bit % 8)
    assert _accepts(bytes(b)) == []


@SETTINGS
@given(st.binary(max_size=3000), frames_strategy())
def test_resync_after_garbage(garbage, frames):
    dec = W.Decoder()
    dec.feed(garbage)  # whatever it makes of the garbage, it must not raise
    good = b"".join(W.encode_frame(t, s, st_, p) for t, s, st_, p in frames)
    events = dec.feed(good)
    got = [e for e in events if isinstance(e, W.Frame)]
    assert got[-len(frames):] == [W.Frame(W.VERSION, t, s, st_, p) for t, s, st_, p in frames]


def test_decoder_buffer_is_bounded():
    dec = W.Decoder(max_payload=64)
    for _ in range(100):
        dec.feed(b"\x55" * 1000)
        assert len(dec._buf) <= dec.max_encoded
    assert dec.feed(b"\x00") == [W.BadFrame(W.TOO_LONG, 100_000)]
    good = W.encode_frame(W.T_HELLO, 1, 0, b"x" * 64)
    assert dec.feed(good) == [W.Frame(W.VERSION, W.T_HELLO, 1, 0, b"x" * 64)]
    assert isinstance(W.Decoder(max_payload=63).feed(good)[0], W.BadFrame)


def test_damaged_frames_are_events_not_exceptions():
    dec = W.Decoder()
    evs = dec.feed(b"\x00\x01\x00\x05ab\x00\x03abcd\x00")
    assert [type(e) for e in evs] == [W.BadFrame, W.BadFrame, W.BadFrame]
    assert {e.reason for e in evs} <= {W.TOO_SHORT, W.BAD_COBS, W.BAD_CRC}


# -- the host's connection -------------------------------------------------------------------------------------


def _reply(t, seq, status=0, payload=b"", version=W.VERSION):
    return W.encode_frame(t | W.REPLY, seq, status, payload, version=version)


def test_connection_matches_replies_and_drops_stale_ones():
    c = protocol.ClientConnection(first_seq=9)
    frame = c.send_request(W.T_HELLO)
    assert W.Decoder().feed(frame)[0].seq == 10
    with pytest.raises(protocol.LocalProtocolError):
        c.send_request(W.T_HELLO)
    assert c.receive_data(_reply(W.T_HELLO, 9)) == []  # late copy of an earlier reply
    assert c.stale == 1
    evs = c.receive_data(_reply(W.T_HELLO, 10, 0, b"hi") + _reply(W.T_HELLO, 10, 0, b"hi"))
    assert evs == [protocol.Reply(W.T_HELLO | W.REPLY, 10, 0, b"hi")]
    assert c.state == protocol.IDLE and c.stale == 2


def test_connection_asks_for_resend_on_nak_and_damage():
    c = protocol.ClientConnection(first_seq=0)
    c.send_request(W.T_MEASURE, b"abc")
    assert c.receive_data(W.encode_frame(W.T_NAK, 0, W.E_FRAME)) == [protocol.Resend("nak")]
    assert c.receive_data(b"\x00\x03xyzzy\x00") == [protocol.Resend("damaged")]
    assert c.resend() == c.resend()
    c.abandon()
    assert c.receive_data(W.encode_frame(W.T_NAK, 0, W.E_FRAME)) == []  # nothing in flight: nothing to resend


@pytest.mark.parametrize("bad", [
    _reply(W.T_HELLO, 1, version=2),
    _reply(W.T_MEASURE, 1),  # reply of the wrong type to our sequence number
    W.encode_frame(W.T_HELLO, 1, 0),  # a request from the board: looped-back port
])
def test_connection_poisoned_by_remote_errors(bad):
    c = protocol.ClientConnection(first_seq=0)
    c.send_request(W.T_HELLO)
    with pytest.raises(protocol.RemoteProtocolError):
        c.receive_data(bad)
    assert c.state == protocol.ERROR
    with pytest.raises(protocol.RemoteProtocolError):
        c.receive_data(b"")
    with pytest.raises(protocol.LocalProtocolError):
        c.send_request(W.T_HELLO)
    c.resync()
    c.send_request(W.T_HELLO)


def test_protocol_error_is_abstract():
    with pytest.raises(TypeError):
        protocol.ProtocolError("x")
    assert issubclass(protocol.LocalProtocolError, protocol.ProtocolError)
    assert issubclass(protocol.RemoteProtocolError, protocol.ProtocolError)


def test_local_errors():
    c = protocol.ClientConnection()
    with pytest.raises(protocol.LocalProtocolError):
        c.resend()
    with pytest.raises(protocol.LocalProtocolError):
        c.send_request(W.T_HELLO | W.REPLY)
    with pytest.raises(protocol.LocalProtocolError):
        c.send_request(W.T_FLASH_DATA, b"x" * (c.max_payload + 1))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_connection_only_events_or_remote_errors(data):
    c = protocol.ClientConnection(first_seq=0)
    c.send_request(W.T_HELLO)
    try:
        evs = c.receive_data(data)
    except protocol.RemoteProtocolError:
        return
    assert all(isinstance(e, (protocol.Reply, protocol.Resend)) for e in evs)


def test_frames_through_pyserial_loop_url():
    """loop:// echoes: the framing survives pyserial's byte path, whatever the read sizes."""
    t = SerialTransport(open_port("loop://"), url="loop://")
    frames = [W.encode_frame(W.T_FLASH_DATA, s, 0, bytes([s]) * (s * 7)) for s in range(1, 30)]
    dec = W.Decoder()
    got = []
    for f in frames:
        t.write(f)
        while len(got) < frames.index(f) + 1:
            data = t.read(1.0)
            assert data, "loop:// returned nothing"
            got += dec.feed(data)
    t.close()
    assert [g.payload for g in got] == [bytes([s]) * (s * 7) for s in range(1, 30)]
