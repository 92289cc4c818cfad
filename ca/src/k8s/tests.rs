//! Tests of [`KubeApi`](super::KubeApi) against the fake API server.
