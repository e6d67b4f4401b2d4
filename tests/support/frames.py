"""Decoding a whole byte string at once: how tests read frames they built or captured."""

from __future__ import annotations

from widthwise.device_agents.errors import AgentError
from widthwise.device_agents.protocol import DEFAULT_MAX_FRAME_TCP, Frame, FrameDecoder


def decode_all(data: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_TCP) -> list[Frame | AgentError]:
    """Decode a complete byte string into its frames and error events (incomplete tail ignored)."""
    decoder = FrameDecoder(max_frame_bytes)
    decoder.feed(data)
    return list(decoder.events())
