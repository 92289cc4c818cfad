//! Telling a TLS ClientHello from plaintext on a PERMISSIVE port.
//!
//! [`sniff`] peeks (does not consume) the first byte of a TCP stream: a TLS
//! handshake record starts with content type 22 (then major version 3).

use std::time::Duration;

use tokio::net::TcpStream;

/// What the first bytes of a connection look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS handshake record (a ClientHello).
    Tls,
    /// Anything else.
    Plaintext,
}

/// Classifies the first bytes of a connection (the first one decides).
pub fn classify(first: &[u8]) -> Protocol {
    match first {
        [0x16, ..] => Protocol::Tls,
        _ => Protocol::Plaintext,
    }
}

/// Waits (without polling on a timer) for the first byte of `stream` and
/// classifies it: a TLS handshake record's type (`0x16`) means TLS, as no
/// plaintext protocol a workload speaks starts with that control byte, and
/// the handshake that follows verifies the rest. Nothing is consumed; a
/// peer that closes without a byte is plaintext (the caller's next read
/// sees the end). A peer that sends nothing within `timeout` gets a
/// `TimedOut` error (the caller closes it).
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> std::io::Result<Protocol> {
    let mut first = [0u8; 1];
    // `peek` parks on the socket's readiness until a byte (or the end)
    // arrives: one wakeup, however slowly the peer sends the rest.
    let peeked = tokio::time::timeout(timeout, stream.peek(&mut first))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "sniff timed out"))??;
    Ok(classify(first.get(..peeked).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_tls_and_plaintext() {
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Protocol::Tls);
        assert_eq!(classify(b"GET / HTTP/1.1"), Protocol::Plaintext);
        assert_eq!(classify(b""), Protocol::Plaintext);
    }
}
