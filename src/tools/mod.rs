//! Tools the server never runs on a request path: benchmarks (`vadyl bench`) and the builders
//! that turn the guests under `guests/` into components (tests and `bench invoke`).

pub mod bench;
pub mod guests;
