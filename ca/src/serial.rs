//! Certificate serial numbers, shared by the authority (self-signed roots,
//! the load-time probe) and issuance (leaves, the serving certificate), so
//! neither module imports the other for it.

use rcgen::SerialNumber;

/// A random positive serial number of exactly 128 bits (16 bytes, top bit
/// clear so DER needs no padding byte, second bit set so it never shrinks).
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_16_positive_bytes_and_distinct() {
        let a = random_serial().to_bytes();
        let b = random_serial().to_bytes();
        assert_eq!(a.len(), 16);
        assert_eq!(a[0] & 0xc0, 0x40);
        assert_ne!(a, b);
    }
}
