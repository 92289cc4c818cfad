//! Tests for X509-SVID verification.
