"""Small helpers every protocol server needs: ids, a token estimate, and an abortive close."""

from __future__ import annotations

import math
import secrets
import socket
import struct

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def rand_id(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def tokens_for_text(text: str) -> int:
    """About four characters a token, as both providers roughly bill text."""
    return math.ceil(len(text) / 4) if text else 0


def abort_rst(ws) -> None:
    """Drop the TCP connection with a reset and no close frame (the client sees 1006)."""
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
