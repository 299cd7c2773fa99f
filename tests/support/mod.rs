//! Shared support for integration tests that need stand-ins for outside services (declare with `mod support;`).
pub mod fake_stripe;
