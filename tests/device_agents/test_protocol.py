"""The frame format: byte layout, round trips, and the decoder's resynchronisation rule."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.device_agents.errors import FrameError, FrameTooLarge, ProtocolVersionError
from widthwise.device_agents.protocol import (
    MAGIC,
    MAX_HEADER_BYTES,
    Frame,
    FrameDecoder,
    encode_frame,
    error_header,
    negotiate_version,
    request_header,
)
from tests.support.frames import decode_all


def frames_of(events: list) -> list[Frame]:
    return [e for e in events if isinstance(e, Frame)]


def errors_of(events: list) -> list[FrameError]:
    return [e for e in events if not isinstance(e, Frame)]


def test_byte_layout_matches_the_written_protocol() -> None:
    header = {"v": 2, "id": 7, "type": "hello"}
    raw = encode_frame(header, b"\x01\x02\x03")
    head = b'{"v":2,"id":7,"type":"hello"}'
    assert raw[:4] == b"WWF\x01"
    assert struct.unpack(">II", raw[4:12]) == (len(head), 3)
    assert struct.unpack(">I", raw[12:16])[0] == zlib.crc32(raw[:12])
    assert raw[16 : 16 + len(head)] == head
    assert raw[16 + len(head) : -4] == b"\x01\x02\x03"
    assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(head + b"\x01\x02\x03")
    assert len(raw) == 16 + len(head) + 3 + 4


def test_round_trip_with_binary_payload() -> None:
    payload = bytes(range(256)) * 10 + MAGIC * 3  # a magic inside a payload must not confuse anything
    header = {"v": 2, "id": 42, "type": "bench_model", "format": "onnx", "note": "é"}
    [frame] = decode_all(encode_frame(header, payload))
    assert frame == Frame(header, payload)
    assert frame.request_id == 42


def test_byte_by_byte_feeding_gives_the_same_frames() -> None:
    raw = encode_frame({"v": 2, "id": 1, "type": "a"}) + encode_frame({"v": 2, "id": 2, "type": "b"}, b"xyz")
    decoder = FrameDecoder()
    got = []
    for i in range(len(raw)):
        decoder.feed(raw[i : i + 1])
        got.extend(decoder.events())
    assert [f.header["id"] for f in got] == [1, 2]
    assert got[1].payload == b"xyz"


def test_garbage_before_a_frame_is_one_error_then_the_frame() -> None:
    events = decode_all(b"hello agent\r\n\x00\xff" + encode_frame({"v": 2, "id": 5, "type": "hello"}))
    assert len(errors_of(events)) == 1
    assert "15 bytes" in errors_of(events)[0].message
    assert [f.request_id for f in frames_of(events)] == [5]


def test_corrupt_body_is_reported_and_the_next_frame_still_decodes() -> None:
    first = bytearray(encode_frame({"v": 2, "id": 1, "type": "hello"}, b"payload"))
    first[20] ^= 0x10
    events = decode_all(bytes(first) + encode_frame({"v": 2, "id": 2, "type": "hello"}))
    assert any("body CRC" in e.message for e in errors_of(events))
    assert [f.request_id for f in frames_of(events)] == [2]


def test_corrupt_length_is_caught_by_the_prefix_crc() -> None:
    first = bytearray(encode_frame({"v": 2, "id": 1, "type": "hello"}))
    first[7] ^= 0x40  # header length now claims far more bytes than follow
    events = decode_all(bytes(first) + encode_frame({"v": 2, "id": 2, "type": "hello"}))
    assert any("prefix CRC" in e.message for e in errors_of(events))
    assert [f.request_id for f in frames_of(events)] == [2]


def test_a_frame_hidden_behind_a_shortened_frame_is_found() -> None:
    # a dropped byte: the first frame swallows the start of the second; the rescan finds it
    first = encode_frame({"v": 2, "id": 1, "type": "hello"}, b"abcdef")
    damaged = first[:20] + first[21:]
    events = decode_all(damaged + encode_frame({"v": 2, "id": 2, "type": "hello"}, b"z" * 30))
    assert [f.request_id for f in frames_of(events)] == [2]
    assert errors_of(events)


def test_truncated_frame_is_given_up_and_decoding_continues() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame({"v": 2, "id": 1, "type": "hello"})[:-6])
    assert decoder.next_event() is None
    assert decoder.bytes_wanted() == 6
    err = decoder.truncate_front()
    assert isinstance(err, FrameError) and "truncated" in err.message
    decoder.feed(encode_frame({"v": 2, "id": 2, "type": "hello"}))
    assert [f.request_id for f in frames_of(list(decoder.events()))] == [2]
    assert decoder.buffered == 0


def test_oversize_frames_are_refused_on_both_sides() -> None:
    with pytest.raises(FrameTooLarge, match="exceeds the cap of 1000"):
        encode_frame({"v": 2}, b"x" * 2000, max_frame_bytes=1000)
    raw = encode_frame({"v": 2, "id": 1, "type": "bench_model"}, b"x" * 2000)
    events = decode_all(raw + encode_frame({"v": 2, "id": 2, "type": "hello"}), max_frame_bytes=1000)
    assert isinstance(events[0], FrameTooLarge) and not events[0].retryable
    assert len(errors_of(events)) == 1
    assert [f.request_id for f in frames_of(events)] == [2]
    # fed in chunks, the refused body still yields one error, not one per chunk
    decoder = FrameDecoder(max_frame_bytes=1000)
    chunked = []
    stream = raw + encode_frame({"v": 2, "id": 3, "type": "hello"})
    for start in range(0, len(stream), 100):
        decoder.feed(stream[start : start + 100])
        chunked.extend(decoder.events())
    assert len(errors_of(chunked)) == 1 and [f.request_id for f in frames_of(chunked)] == [3]
    # an announced length is refused before its bytes arrive: no waiting on a huge body
    decoder = FrameDecoder(max_frame_bytes=1000)
    decoder.feed(raw[:16])
    assert isinstance(decoder.next_event(), FrameTooLarge)


def test_header_cap_is_independent_of_the_frame_cap() -> None:
    with pytest.raises(FrameTooLarge, match="header"):
        encode_frame({"blob": "x" * (MAX_HEADER_BYTES + 1)})


@pytest.mark.parametrize(
    "head, match",
    [
        (b"[1,2]", "JSON object"),
        (b"{not json", "valid UTF-8 JSON"),
        (b'{"x":NaN}', "valid UTF-8 JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_well_framed_but_bad_headers_are_frame_errors(head: bytes, match: str) -> None:
    lengths = struct.pack(">II", len(head), 0)
    raw = MAGIC + lengths + struct.pack(">I", zlib.crc32(MAGIC + lengths)) + head + struct.pack(">I", zlib.crc32(head))
    events = decode_all(raw + encode_frame({"v": 2, "id": 9, "type": "hello"}))
    assert match in errors_of(events)[0].message
    assert [f.request_id for f in frames_of(events)] == [9]


def test_nan_is_refused_when_encoding() -> None:
    with pytest.raises(FrameError, match="JSON"):
        encode_frame({"x": float("nan")})


def test_version_negotiation_picks_the_highest_common_version() -> None:
    assert negotiate_version([1, 2, 3]) == 2
    assert negotiate_version(None) == 2
    with pytest.raises(ProtocolVersionError, match="no common protocol version"):
        negotiate_version([3])
    with pytest.raises(ProtocolVersionError, match="list of integers"):
        negotiate_version("1")


def test_a_version_1_peer_is_told_both_versions() -> None:
    with pytest.raises(ProtocolVersionError) as info:
        negotiate_version([1])
    message = info.value.message
    assert "the peer speaks version 1, this side speaks version 2" in message and "upgrade" in message
    assert info.value.details == {"offered": [1], "supported": [2]}


def test_request_and_error_headers() -> None:
    assert request_header("hello", 3, {"x": 1}) == {"v": 2, "id": 3, "type": "hello", "x": 1}
    with pytest.raises(FrameError, match="clashes"):
        request_header("hello", 3, {"id": 4})
    err = error_header(3, FrameTooLarge("too big", size=10, cap=5))
    assert err["error"] == {"code": "frame_too_large", "message": "too big", "details": {"size": 10, "cap": 5}, "retryable": False}
    json.dumps(err)


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=60)), min_size=1, max_size=5),
    cut=st.integers(min_value=1, max_value=64),
)
def test_every_frame_between_garbage_is_recovered(chunks: list[tuple[bytes, bytes]], cut: int) -> None:
    stream, expected = b"", []
    for i, (garbage, payload) in enumerate(chunks):
        stream += garbage.replace(b"W", b"w") + encode_frame({"v": 2, "id": i, "type": "t"}, payload)
        expected.append((i, payload))
    decoder = FrameDecoder(max_frame_bytes=4096)
    got = []
    for start in range(0, len(stream), cut):
        decoder.feed(stream[start : start + cut])
        got.extend(frames_of(list(decoder.events())))
    assert [(f.request_id, f.payload) for f in got] == expected


def test_the_worked_examples_of_protocol_md_hold() -> None:
    from pathlib import Path

    from widthwise.device_agents.auth import ANSWER_LABEL, REQUEST_LABEL, SessionKey, mac_input, seal
    from widthwise.device_agents.protocol import encode_raw_frame, result_header

    doc = (Path(__file__).resolve().parents[2] / "device_agents" / "PROTOCOL.md").read_text()
    key = SessionKey(b"s3cret-token-0123456789", "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100")
    head, region = seal({**request_header("authenticate", 2), "seq": 1}, b"", lambda h, p: key.request_tag(1, h, p))
    assert head.decode() in doc and len(mac_input(REQUEST_LABEL, (key.agent_nonce, key.client_nonce), 1, None, head, b"")) == 176
    request_tag = region[-32:]
    assert request_tag.hex() in doc
    assert encode_raw_frame(head, region).hex() in doc.replace("\n", "").replace(" ", "")
    answer_head, answer_region = seal(result_header(2, {"authenticated": True}), b"", lambda h, p: key.answer_tag(1, request_tag, h, p))
    assert answer_head.decode() in doc and answer_region.hex() in doc
    assert len(mac_input(ANSWER_LABEL, (key.agent_nonce, key.client_nonce), 1, request_tag, answer_head, b"")) == 224
    assert zlib.crc32(b"123456789") == 0xCBF43926 and "0xCBF43926" in doc
    assert "57 57 46 01" in doc and MAGIC == bytes.fromhex("57574601")
