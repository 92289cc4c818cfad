//! X509-SVID verification (filled by the verification work).
