import socket

import pytest

from ember.agent import protocol


def test_frames_round_trip_binary_and_json() -> None:
    left, right = socket.socketpair()
    sender, receiver = protocol.FramedSocket(left), protocol.FramedSocket(right)
    every_byte = bytes(range(256))
    sender.send(protocol.encode_frame(protocol.STDOUT, every_byte))
    sender.send_json({"op": "hello", "text": "ünïcode"})
    sender.send(protocol.encode_frame(protocol.END))
    assert receiver.read_frame() == (protocol.STDOUT, every_byte)
    assert receiver.read_json() == {"op": "hello", "text": "ünïcode"}
    assert receiver.read_frame() == (protocol.END, b"")
    sender.close()
    with pytest.raises(protocol.ProtocolError):
        receiver.read_frame()
    receiver.close()


def test_bad_frames_are_refused() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_header(b"X\x00\x00\x00\x01")
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_header(b"J\xff\xff\xff\xff")
    with pytest.raises(protocol.ProtocolError):
        protocol.encode_frame(protocol.DATA, b"x" * (protocol.MAX_FRAME_BYTES + 1))
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_json(b"[1, 2]")
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_json(b"{not json")


def test_errors_carry_their_code() -> None:
    error = protocol.AgentError(protocol.NOT_FOUND, "no such file")
    assert error.to_json() == {
        "ok": False,
        "error": {"code": "not_found", "message": "no such file"},
    }
