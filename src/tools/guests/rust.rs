//! Builds a Rust guest crate into a component: `cargo build --release --locked --target
//! wasm32-unknown-unknown`, then [`super::componentize`].
//!
//! `wasm32-unknown-unknown` rather than a WASI target because a Vadyl connector may import only
//! `vadyl:connector` interfaces: with no WASI in the target, nothing in the standard library can pull
//! a `wasi:` import into the module. `wit-bindgen` (0.61 and later) exports `cabi_realloc` on this
//! target itself, so the core module needs no adapter.
//!
//! Each configuration (feature set and environment, which guests read with `option_env!`) builds in
//! its own directory under the caller's target directory: cargo rebuilds a crate in place when an
//! environment variable it tracks changes, so two configurations sharing a directory would overwrite
//! each other's module, and concurrent builds could read the other's. The price is one cold build
//! per configuration; afterwards each is a no-op `cargo build`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::GuestBuildError;

/// The compilation target of Rust guests.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

const INSTALL_RUST: &str =
    "install Rust with rustup (https://rustup.rs), then run `rustup target add wasm32-unknown-unknown`";

/// Builds a guest crate for wasm32-unknown-unknown (release) and turns the core module into a component.
///
/// `features` empty builds the crate's default features; otherwise exactly `features` (with
/// `--no-default-features`). `env` is set for the build (guests read it with `option_env!`). The
/// build runs in a subdirectory of `target_dir` named after a hash of `features` and `env`.
pub fn build_rust_component(
    crate_dir: &Path,
    features: &[&str],
    env: &[(&str, &str)],
    target_dir: &Path,
) -> Result<Vec<u8>, GuestBuildError> {
    let manifest = crate_dir.join("Cargo.toml");
    let manifest = manifest.canonicalize().map_err(GuestBuildError::io("find the guest crate manifest", &manifest))?;
    // One target directory for every configuration: switching features or environment rebuilds only
    // the guest crate (seconds), not its dependencies. An exclusive lock spans the build and the read
    // of its output, so concurrent builds of other configurations cannot swap the file under us.
    let build_dir = target_dir.to_owned();
    fs::create_dir_all(&build_dir).map_err(GuestBuildError::io("create the guest target directory", &build_dir))?;
    let lock_path = build_dir.join(".vadyl-guest-build.lock");
    let lock = fs::File::create(&lock_path).map_err(GuestBuildError::io("create the build lock", &lock_path))?;
    lock.lock().map_err(GuestBuildError::io("take the build lock", &lock_path))?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--locked", "--target", WASM_TARGET, "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&build_dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    if !features.is_empty() {
        command.args(["--no-default-features", "--features", &features.join(",")]);
    }
    let output = super::run_tool(&mut command, INSTALL_RUST, build_failure_hint)?;

    let module_path = wasm_artifact(&String::from_utf8_lossy(&output.stdout), &manifest)?;
    let module = fs::read(&module_path).map_err(GuestBuildError::io("read the core module", &module_path))?;
    drop(lock);
    super::componentize(&module, &module_path)
}

/// The `.wasm` file of the `cdylib` built from `manifest`, from cargo's JSON messages.
fn wasm_artifact(messages: &str, manifest: &Path) -> Result<PathBuf, GuestBuildError> {
    let mut found = None;
    for message in messages.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()) {
        if message["reason"] != "compiler-artifact"
            || Path::new(message["manifest_path"].as_str().unwrap_or("")) != manifest
        {
            continue;
        }
        let is_cdylib = message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .find(|name| name.ends_with(".wasm"));
        if let (true, Some(wasm)) = (is_cdylib, wasm) {
            found = Some(PathBuf::from(wasm));
        }
    }
    found.ok_or_else(|| {
        GuestBuildError::MissingOutput(format!(
            "cargo built no `.wasm` for `{}`; a guest crate needs `crate-type = [\"cdylib\"]` in its [lib] section",
            manifest.display()
        ))
    })
}

/// Recognises the usual causes of a failed guest build in cargo's stderr.
fn build_failure_hint(stderr: &str) -> Option<String> {
    if stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `core`")
        || stderr.contains("can't find crate for `std`")
    {
        Some(format!("the `{WASM_TARGET}` target is missing: run `rustup target add {WASM_TARGET}`"))
    } else if stderr.contains("but --locked was passed") {
        Some("the guest crate's Cargo.lock is missing or stale: run `cargo generate-lockfile` (or `cargo update`) in the guest crate and commit Cargo.lock".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdylib_module_of_the_crate_is_found_in_cargo_messages() {
        let manifest = Path::new("/src/guest/Cargo.toml");
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/reg/serde_json/Cargo.toml","target":{"kind":["lib"]},"filenames":["/t/libserde_json.rlib"]}"#,
            "not json: cargo may print other lines",
            r#"{"reason":"compiler-artifact","manifest_path":"/src/guest/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-unknown-unknown/release/guest.wasm"]}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            wasm_artifact(&messages, manifest).unwrap(),
            Path::new("/t/wasm32-unknown-unknown/release/guest.wasm")
        );
    }

    #[test]
    fn a_crate_without_cdylib_is_reported() {
        let messages = r#"{"reason":"compiler-artifact","manifest_path":"/src/guest/Cargo.toml","target":{"kind":["lib"]},"filenames":["/t/libguest.rlib"]}"#;
        let err = wasm_artifact(messages, Path::new("/src/guest/Cargo.toml")).expect_err("no cdylib was built");
        assert!(err.to_string().contains("crate-type = [\"cdylib\"]"), "{err}");
    }

    #[test]
    fn known_build_failures_get_a_hint() {
        let missing = "error[E0463]: can't find crate for `core`\n  = note: the `wasm32-unknown-unknown` target may not be installed";
        assert!(build_failure_hint(missing).unwrap().contains("rustup target add wasm32-unknown-unknown"));
        let stale = "error: the lock file /g/Cargo.lock needs to be updated but --locked was passed to prevent this";
        assert!(build_failure_hint(stale).unwrap().contains("Cargo.lock"));
        assert_eq!(build_failure_hint("error[E0308]: mismatched types"), None);
    }

    #[test]
    fn a_missing_crate_is_an_io_error_naming_the_manifest() {
        let target = std::env::temp_dir();
        let err = build_rust_component(Path::new("/nonexistent/vadyl-guest"), &[], &[], &target)
            .expect_err("there is no crate there");
        assert!(matches!(err, GuestBuildError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/vadyl-guest/Cargo.toml"), "{err}");
    }
}
