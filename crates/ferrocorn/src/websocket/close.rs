//! Close codes (RFC 6455 §7.4): which one bad input from the client earns, and which ones an
//! app may send.

use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::Error;

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is going away (a graceful stop).
pub const GOING_AWAY: u16 = 1001;
/// A protocol error: unmasked frames, reserved bits, unknown opcodes, bad control frames.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Data inconsistent with the message's type: text that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// A message too big to process (`--ws-max-size`).
pub const TOO_BIG: u16 = 1009;
/// An unexpected condition on the server (an unanswered ping, an app that failed).
pub const INTERNAL_ERROR: u16 = 1011;

/// The close code the client's bad input earns, or `None` when the connection is simply gone
/// (reset, closed without a close frame, an I/O error): nothing can be sent then.
pub fn for_error(e: &Error) -> Option<u16> {
    match e {
        Error::Utf8(_) => Some(INVALID_DATA),
        Error::Capacity(CapacityError::MessageTooLong { .. }) => Some(TOO_BIG),
        Error::Capacity(_) => Some(PROTOCOL_ERROR),
        Error::Protocol(p) => match p {
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::HandshakeIncomplete => None,
            _ => Some(PROTOCOL_ERROR),
        },
        Error::AttackAttempt => Some(PROTOCOL_ERROR),
        // A compressed message that inflates past the limit, or not at all.
        Error::Io(io) => super::deflate::InflateError::in_io(io).map(|e| e.close_code()),
        _ => None,
    }
}

/// True for a code an endpoint may put in a close frame (§7.4.1, §7.4.2): 1000-1003,
/// 1007-1014 and 3000-4999; never 1004-1006 or 1015, which are reserved or only reported.
pub fn may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_bad_input_gets_the_rfcs_code() {
        let protocol = |p| Error::Protocol(p);
        for p in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::UnknownDataFrameType(3),
            ProtocolError::UnknownControlFrameType(11),
            ProtocolError::ControlFrameTooBig,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::UnexpectedContinueFrame,
            ProtocolError::InvalidCloseSequence,
        ] {
            assert_eq!(for_error(&protocol(p)), Some(PROTOCOL_ERROR));
        }
        let too_long = Error::Capacity(CapacityError::MessageTooLong {
            size: 20,
            max_size: 10,
        });
        assert_eq!(for_error(&too_long), Some(TOO_BIG));
        assert_eq!(
            for_error(&Error::Utf8("invalid utf-8".into())),
            Some(INVALID_DATA)
        );
        assert_eq!(
            for_error(&protocol(ProtocolError::ResetWithoutClosingHandshake)),
            None
        );
        assert_eq!(for_error(&Error::ConnectionClosed), None);
        assert_eq!(
            for_error(&Error::Io(std::io::ErrorKind::BrokenPipe.into())),
            None
        );
    }

    #[test]
    fn reserved_codes_are_never_sent() {
        for code in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(may_send(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!may_send(code), "{code}");
        }
    }
}
