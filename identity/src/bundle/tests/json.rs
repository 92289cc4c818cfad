//! JSON tests.
