//! Unit tests of the SDS resource encoding and name rules.
