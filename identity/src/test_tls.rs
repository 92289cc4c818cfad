//! In-memory TLS for this crate's tests: two rustls connections exchange
//! bytes through buffers, no sockets.

use rustls::{Connection, Error};

/// Moves every pending TLS byte from `from` to `to`; records `to`'s first
/// error. Returns whether any byte moved.
pub(crate) fn pump(from: &mut Connection, to: &mut Connection, to_err: &mut Option<Error>) -> bool {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    if buf.is_empty() {
        return false;
    }
    let mut rest = &buf[..];
    while to_err.is_none() && !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        if let Err(err) = to.process_new_packets() {
            *to_err = Some(err);
        }
    }
    true
}
