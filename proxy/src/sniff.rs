//! Telling a TLS ClientHello from plaintext on a PERMISSIVE port.
//!
//! [`sniff`] peeks (does not consume) the first bytes of a TCP stream: a TLS
//! handshake record starts with content type 22 and major version 3.

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

/// Classifies the first bytes of a connection.
pub fn classify(first: &[u8]) -> Protocol {
    match first {
        [0x16, 0x03, ..] | [0x16] => Protocol::Tls,
        _ => Protocol::Plaintext,
    }
}

/// Peeks at `stream` until two bytes arrive (one is enough when it is not a
/// handshake record's type; or the peer closes) and classifies them.
/// Nothing is consumed. A peer that sends nothing within `timeout` gets a
/// `TimedOut` error (the caller closes it).
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> std::io::Result<Protocol> {
    let mut buf = [0u8; 2];
    let peeked = tokio::time::timeout(timeout, async {
        loop {
            let n = stream.peek(&mut buf).await?;
            if n >= 2 || n == 0 || buf.first().is_some_and(|b| *b != 0x16) {
                return Ok::<usize, std::io::Error>(n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "sniff timed out"))??;
    Ok(classify(buf.get(..peeked).unwrap_or_default()))
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
