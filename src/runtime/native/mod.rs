//! `BuiltInNative`: first-party Rust adapters compiled into this binary.
//!
//! They sit behind the same [`Adapter`] boundary as declarative bundles and components, use the
//! same host services through [`StepHost`](super::adapter::StepHost) (so the guarantees on egress,
//! secrets and records are the same), and go through the same lifecycle: their artifact is a signed
//! descriptor naming the adapter and the build of the binary, and they pass the same conformance.

mod webhook;

use std::sync::Arc;

use super::adapter::Adapter;
use super::component::Descriptor;
use crate::ids::ContractRef;

/// A native adapter this binary provides.
pub trait NativeAdapter: Send + Sync {
    /// Registry name, e.g. `vadyl.webhook-hmac`.
    fn name(&self) -> &'static str;
    /// The adapter's own version; an artifact built against another version is refused at load.
    fn version(&self) -> &'static str;
    fn contract(&self) -> ContractRef;
    /// The policy used when the build names none.
    fn default_descriptor(&self) -> Descriptor;
    fn adapter(&self) -> Arc<dyn Adapter>;
}

static ADAPTERS: &[&dyn NativeAdapter] = &[&webhook::WebhookHmac];

pub fn find(name: &str) -> Option<&'static dyn NativeAdapter> {
    ADAPTERS.iter().copied().find(|a| a.name() == name)
}

pub fn names() -> Vec<&'static str> {
    ADAPTERS.iter().map(|a| a.name()).collect()
}
