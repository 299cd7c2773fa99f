//! Conformance: running an implementation against its contract's test vectors on a host-controlled
//! upstream, and the checks that decide whether it may be published.

pub mod upstream;
