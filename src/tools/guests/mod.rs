//! Building connector guests from source into WebAssembly components.
//!
//! Vadyl ships example and test connectors as source (`guests/` at the repository root), not as
//! checked-in binaries: a binary nobody can rebuild is a binary nobody can audit. This module turns
//! that source into component bytes the runtime can load — [`rust`] for Rust crates (`cargo` for
//! `wasm32-unknown-unknown`), [`c`] for C sources — and owns what both share: the error type, running
//! a build tool with an actionable message when it is missing or fails, and the last step, wrapping a
//! core module that carries `wit-bindgen` metadata into a component with `wit-component`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod c;
pub mod js;
pub mod python;
pub mod rust;
pub mod scaffold;

/// Most lines of a failed tool's stderr kept in [`GuestBuildError::BuildFailed`].
pub const STDERR_TAIL_LINES: usize = 40;

/// Why a guest could not be built into a component.
#[derive(Debug, thiserror::Error)]
pub enum GuestBuildError {
    /// A build tool could not be started, usually because it is not installed or not on `PATH`.
    #[error("cannot start `{tool}`: {source}; {install}")]
    ToolUnavailable {
        /// The program that was run.
        tool: String,
        /// What to install to get it.
        install: String,
        #[source]
        source: io::Error,
    },
    /// The build tool ran and failed.
    #[error(
        "`{command}` failed ({status}){}; last lines of its error output:\n{stderr_tail}",
        .hint.as_ref().map(|h| format!(". {h}")).unwrap_or_default()
    )]
    BuildFailed {
        /// The command line that failed.
        command: String,
        /// Its exit status.
        status: String,
        /// What to do about it, when the output shows a known cause (e.g. a missing target).
        hint: Option<String>,
        /// The last [`STDERR_TAIL_LINES`] lines of its stderr.
        stderr_tail: String,
    },
    /// The build succeeded but did not produce the expected core module.
    #[error("the build produced no WebAssembly module: {0}")]
    MissingOutput(String),
    /// The core module could not be wrapped into a valid component.
    #[error("cannot turn the core module `{}` into a component: {reason}", .module.display())]
    Componentize {
        /// Where the core module was read from.
        module: PathBuf,
        /// The encoder's explanation.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        /// What was being done, e.g. `read the core module`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl GuestBuildError {
    /// An [`GuestBuildError::Io`] builder for `map_err`.
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::Io { action, path: path.to_path_buf(), source }
    }
}

/// The directory holding the guest sources, `guests/` next to the main crate's `Cargo.toml`.
pub fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests")
}

/// Where the Python and JavaScript guest toolchains are installed when the caller names no
/// directory: `$VADYL_TOOLCHAINS`, else `$XDG_CACHE_HOME/vadyl/toolchains`, else
/// `~/.cache/vadyl/toolchains`. Each toolchain is installed once per pinned version.
pub fn default_toolchains_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VADYL_TOOLCHAINS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("vadyl").join("toolchains")
}

/// The toolchains directory of this checkout's tests and benchmarks: under `target/`, so that a
/// `cargo clean` removes it and nothing is installed outside the build directory.
pub fn repository_toolchains_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("guest-toolchains")
}

/// Installs a toolchain into `dir` once per `stamp` (what it is installed from): under an exclusive
/// lock, so concurrent builds wait for one install, `install` runs unless the marker already holds
/// `stamp`; the marker is written last, so an interrupted install is redone.
fn install_once(
    dir: &Path,
    stamp: &str,
    install: impl FnOnce() -> Result<(), GuestBuildError>,
) -> Result<(), GuestBuildError> {
    std::fs::create_dir_all(dir).map_err(GuestBuildError::io("create the toolchain directory", dir))?;
    let lock_path = dir.join(".vadyl-install.lock");
    let lock = std::fs::File::create(&lock_path).map_err(GuestBuildError::io("create the install lock", &lock_path))?;
    lock.lock().map_err(GuestBuildError::io("take the install lock", &lock_path))?;
    let marker = dir.join(".vadyl-installed");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    install()?;
    std::fs::write(&marker, stamp).map_err(GuestBuildError::io("mark the toolchain installed", &marker))
}

/// What an installed toolchain was installed from: a marker compares it to the pinned manifests.
fn stamp(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Runs `command` to completion, capturing its output.
///
/// `install` says what to install when the program cannot be started. On a non-zero exit,
/// `hint_for(stderr)` may recognise a known cause and say what to do; the error carries the tail of
/// stderr either way.
pub fn run_tool(
    command: &mut Command,
    install: &str,
    hint_for: impl Fn(&str) -> Option<String>,
) -> Result<Output, GuestBuildError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| GuestBuildError::ToolUnavailable {
        tool: tool.clone(),
        install: install.to_owned(),
        source,
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(GuestBuildError::BuildFailed {
        command: command_line(command),
        status: output.status.to_string(),
        hint: hint_for(&stderr),
        stderr_tail: tail(&stderr, STDERR_TAIL_LINES),
    })
}

/// Wraps a core module carrying `wit-bindgen` component-type metadata into a validated component.
/// `origin` only names the module in errors.
pub fn componentize(module: &[u8], origin: &Path) -> Result<Vec<u8>, GuestBuildError> {
    let fail = |e| GuestBuildError::Componentize { module: origin.to_path_buf(), reason: format!("{e:#}") };
    wit_component::ComponentEncoder::default().module(module).map_err(fail)?.validate(true).encode().map_err(fail)
}

/// The names a component imports at its top level (e.g. `vadyl:connector/egress@1.0.0`): what the
/// host has to provide, read without compiling anything.
pub fn component_imports(component: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.map_err(|e| e.to_string())? {
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.push(import.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The program and its arguments, space-separated, for messages.
fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_dir_is_next_to_the_manifest() {
        assert!(guests_dir().ends_with("guests"));
        assert!(guests_dir().starts_with(env!("CARGO_MANIFEST_DIR")));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn a_missing_tool_says_what_to_install() {
        let err = run_tool(&mut Command::new("vadyl-no-such-tool-xyz"), "install the xyz toolchain", |_| None)
            .expect_err("the tool does not exist");
        assert!(matches!(err, GuestBuildError::ToolUnavailable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("vadyl-no-such-tool-xyz") && message.contains("install the xyz toolchain"),
            "{message}"
        );
    }

    #[test]
    fn a_failing_tool_reports_its_stderr_tail_and_hint() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo first >&2; echo 'error: target may not be installed' >&2; exit 3"]);
        let err = run_tool(&mut command, "install sh", |stderr| {
            stderr.contains("may not be installed").then(|| "rustup target add x".to_owned())
        })
        .expect_err("the command exits with 3");
        let message = err.to_string();
        assert!(message.contains("sh -c"), "{message}");
        assert!(message.contains("rustup target add x"), "{message}");
        assert!(message.ends_with("first\nerror: target may not be installed"), "{message}");
    }

    #[test]
    fn a_succeeding_tool_returns_its_output() {
        let output = run_tool(Command::new("sh").args(["-c", "printf ok"]), "install sh", |_| None).unwrap();
        assert_eq!(output.stdout, b"ok");
    }

    #[test]
    fn componentize_rejects_what_is_not_a_core_module() {
        let err = componentize(b"not wasm", Path::new("x.wasm")).expect_err("garbage is not a module");
        assert!(matches!(err, GuestBuildError::Componentize { .. }), "{err:?}");
        assert!(err.to_string().contains("x.wasm"), "{err}");
    }

    #[test]
    fn componentize_wraps_a_module_without_interfaces() {
        let empty_module = b"\0asm\x01\0\0\0";
        let component = componentize(empty_module, Path::new("empty.wasm")).unwrap();
        assert_eq!(&component[..4], b"\0asm");
        assert_ne!(component, empty_module, "a component has another layer/version than a core module");
    }
}
