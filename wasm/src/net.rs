//! What a failed fetch was, and how much of an answer is read (pure: no JS).

use lamina_core::registry::NetError;

/// A request that got no answer, from the runtime's message (a JS `TypeError` from `fetch`):
/// typed where the message clearly says what happened (timed out, reset, refused), else
/// [`NetError::Other`].
pub fn net_error(message: String) -> NetError {
    let m = message.to_ascii_lowercase();
    if m.contains("timed out") || m.contains("timeout") {
        NetError::Timeout(message)
    } else if m.contains("reset") {
        NetError::Reset(message)
    } else if m.contains("refused") {
        NetError::Refused(message)
    } else {
        NetError::Other(message)
    }
}

/// Appends `piece` to an answer's `body`, keeping at most `max` bytes; true when bytes were
/// left out (the answer is larger than the request wants: stop reading it).
pub fn append_capped(body: &mut Vec<u8>, piece: &[u8], max: u64) -> bool {
    let room = usize::try_from(max.saturating_sub(body.len() as u64)).unwrap_or(usize::MAX);
    if piece.len() > room {
        body.extend_from_slice(&piece[..room]);
        return true;
    }
    body.extend_from_slice(piece);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_failures_are_typed_only_when_the_message_says_so() {
        assert!(matches!(
            net_error("Failed to fetch".into()),
            NetError::Other(m) if m == "Failed to fetch"
        ));
        assert!(matches!(
            net_error("NetworkError when attempting to fetch resource.".into()),
            NetError::Other(_)
        ));
        assert!(matches!(
            net_error("Network connection lost.".into()),
            NetError::Other(_)
        ));
        assert!(matches!(
            net_error("The operation timed out".into()),
            NetError::Timeout(_)
        ));
        assert!(matches!(
            net_error("connection reset by peer".into()),
            NetError::Reset(_)
        ));
        assert!(matches!(
            net_error("connect ECONNREFUSED: connection refused".into()),
            NetError::Refused(_)
        ));
    }

    #[test]
    fn answers_are_capped_at_the_size_the_request_wants() {
        let mut b = Vec::new();
        assert!(!append_capped(&mut b, b"0123", 10));
        assert!(!append_capped(&mut b, b"456789", 10), "exactly the limit");
        assert_eq!(b, b"0123456789");
        assert!(append_capped(&mut b, b"a", 10));
        assert_eq!(b.len(), 10);
        let mut b = Vec::new();
        assert!(append_capped(&mut b, b"0123456789", 4));
        assert_eq!(b, b"0123");
        let mut b = Vec::new();
        assert!(!append_capped(&mut b, b"", 0));
        assert!(append_capped(&mut b, b"x", 0));
        assert!(b.is_empty());
    }
}
