"""The engine's own outcome names, and the exception that ends a session with one.

Kept apart from the engine so the transport, the receiver's marks and the script player can all
end a session the same way without importing the engine (no import cycle back to session.py).
The parametrised error classes (http_<status>, timeout:<phase>, ...) are built by probes.results.
"""

from __future__ import annotations

#: Outcome when the caller's `stop` event ended the session (not a target failure).
STOPPED = "stopped"
#: Outcome when the spec cannot be used as given: the API key's environment variable is unset,
#: the URL is not ws(s)://host, the ca_file cannot be loaded, a say step's audio cannot be made
#: (nothing was sent).
CONFIG = "config"
#: Outcome for a bug in the engine itself (reported, never raised into a load generator).
CLIENT_ERROR = "client_error"
CLIENT_OVERLOAD = "client_overload"
SESSION_EXPIRED = "session_expired"
#: Outcome when the server announced a close (Gemini `goAway`) and then closed the connection.
GO_AWAY = "go_away"
#: WebRTC: ICE never reached a working candidate pair (within the connect timeout).
ICE_FAILED = "ice_failed"
#: WebRTC: ICE connected but the DTLS handshake (and so SRTP and the data channel) failed.
DTLS_FAILED = "dtls_failed"
#: WebRTC: the peer closed the `oai-events` data channel while the call was up.
DC_CLOSED = "dc_closed"


class Failure(Exception):
    """Ends the session with `(outcome, message)`; raised inside the engine only, never out of
    run_session."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(outcome, message)
        self.outcome, self.message = outcome, message
