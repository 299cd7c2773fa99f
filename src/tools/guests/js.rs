//! Builds a JavaScript guest into a component with ComponentizeJS (StarlingMonkey, npm
//! `@bytecodealliance/componentize-js`, pinned with its lockfile in `js/`).
//!
//! The toolchain is installed once per version into a toolchain directory with `npm ci` (the
//! lockfile pins every package), and each build runs `js/build.mjs` there: `componentize()` with
//! every optional WASI feature disabled (`stdio`, `random`, `clocks`, `http`, `fetch-event`). With
//! those off, the component's imports are exactly its world's `vadyl:connector/*` interfaces — no
//! WASI stubs or composition are needed. What that costs the guest: `console.log` does nothing,
//! `Date.now()` and `Math.random()` are frozen at build time (use `time.now`), `setTimeout` traps,
//! and an exception that escapes an export traps without a message, so a guest catches everything
//! and answers `failed`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{run_tool, GuestBuildError};

/// The pinned ComponentizeJS release (`js/package.json`, `js/package-lock.json`).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

const PACKAGE_JSON: &str = include_str!("js/package.json");
const PACKAGE_LOCK: &str = include_str!("js/package-lock.json");
const BUILD_SCRIPT: &str = include_str!("js/build.mjs");

const INSTALL_NODE: &str = "install Node.js 20 or later with npm (Debian: `apt-get install nodejs npm`)";

/// The toolchain under `toolchains`, installing it (`npm ci`, from the npm registry) on first use.
/// A lock serialises concurrent installs; a marker written last says the install is complete.
pub fn toolchain(toolchains: &Path) -> Result<PathBuf, GuestBuildError> {
    let dir = toolchains.join(format!("componentize-js-{COMPONENTIZE_JS_VERSION}"));
    super::install_once(&dir, &super::stamp(&[PACKAGE_JSON, PACKAGE_LOCK]), || {
        for (name, text) in [("package.json", PACKAGE_JSON), ("package-lock.json", PACKAGE_LOCK)] {
            let path = dir.join(name);
            fs::write(&path, text).map_err(GuestBuildError::io("write the toolchain manifest", &path))?;
        }
        run_tool(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .stdin(Stdio::null()),
            INSTALL_NODE,
            |stderr| {
                (stderr.contains("ENOTFOUND") || stderr.contains("EAI_AGAIN"))
                    .then(|| "npm could not reach its registry: the first build needs the npm registry".to_owned())
            },
        )
        .map(drop)
    })?;
    // The build script is ours and small: always the current one.
    let script = dir.join("build.mjs");
    fs::write(&script, BUILD_SCRIPT).map_err(GuestBuildError::io("write the build script", &script))?;
    Ok(dir)
}

/// Builds `source` (an ES module exporting the world's interface, e.g. `webhookDeliverV1Api`)
/// against `world` of the WIT package in `wit_dir`; the component is written to `out` and returned.
pub fn build_js_component(
    source: &Path,
    wit_dir: &Path,
    world: &str,
    toolchains: &Path,
    out: &Path,
) -> Result<Vec<u8>, GuestBuildError> {
    let toolchain = toolchain(toolchains)?;
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(GuestBuildError::io("create the output directory", parent))?;
    }
    let absolute = |p: &Path| p.canonicalize().map_err(GuestBuildError::io("find", p));
    let out_abs = out.parent().map(absolute).transpose()?.unwrap_or_default().join(out.file_name().unwrap_or_default());
    run_tool(
        Command::new("node")
            .arg(toolchain.join("build.mjs"))
            .arg(absolute(source)?)
            .arg(absolute(wit_dir)?)
            .arg(world)
            .arg(&out_abs)
            .current_dir(&toolchain)
            .stdin(Stdio::null()),
        INSTALL_NODE,
        |stderr| {
            stderr.contains("does not export").then(|| {
                "export the world's interface as a named object in lowerCamelCase, e.g. \
                 `export const webhookDeliverV1Api = { deliver(input, exchanges) { … } }`"
                    .to_owned()
            })
        },
    )?;
    fs::read(&out_abs).map_err(GuestBuildError::io("read the built component", &out_abs))
}
