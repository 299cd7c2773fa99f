//! Builds a Python guest into a component with componentize-py (PyPI, pinned), `--stub-wasi`.
//!
//! componentize-py bundles its own CPython (3.14 in 0.25.1), runs the app's module-level code at
//! build time (pre-initialisation) and snapshots the result. `--stub-wasi` replaces every WASI
//! import of that interpreter with a stub that traps, so the component imports only its world's
//! `vadyl:connector/*` interfaces. What that costs the guest: no files (so every `import` must run
//! at module level, during the build), no clock or randomness of its own (use `time.now`), and an
//! exception escaping an export traps the call — a guest catches everything and answers `failed`.
//! A call into a stubbed WASI function traps too; the host reports it as a trap of that call
//! (`the guest trapped: …`), never a hang.
//!
//! The toolchain is a virtual environment made by the build under a toolchains directory, once per
//! pinned version (`python3 -m venv`, then `pip install componentize-py==…`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{run_tool, GuestBuildError};

/// The pinned componentize-py release.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

const INSTALL_PYTHON: &str = "install Python 3.9 or later with venv and pip (Debian: `apt-get install python3-venv`)";

/// The module a build writes `constants` into, importable by the guest (`vadyl_build_config`).
pub const BUILD_CONFIG_MODULE: &str = "vadyl_build_config";

/// The `componentize-py` executable under `toolchains`, making the virtual environment and
/// installing the pinned release (from PyPI) on first use.
pub fn toolchain(toolchains: &Path) -> Result<PathBuf, GuestBuildError> {
    let dir = toolchains.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let venv = dir.join("venv");
    super::install_once(&dir, &super::stamp(&[COMPONENTIZE_PY_VERSION]), || {
        let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
        run_tool(
            Command::new(python).args(["-m", "venv", "--clear"]).arg(&venv).stdin(Stdio::null()),
            INSTALL_PYTHON,
            |e| e.contains("ensurepip").then(|| "the venv module lacks pip: `apt-get install python3-venv`".to_owned()),
        )?;
        run_tool(
            Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
                .stdin(Stdio::null()),
            INSTALL_PYTHON,
            |e| {
                (e.contains("No matching distribution") || e.contains("Failed to establish"))
                    .then(|| "pip could not fetch componentize-py: the first build needs PyPI".to_owned())
            },
        )
        .map(drop)
    })?;
    Ok(venv.join("bin").join("componentize-py"))
}

/// Builds the module `module` of `app_dir` (e.g. `app` for `app.py`, defining the class named after
/// the world's export, e.g. `PaymentChargeV1Api`) against `world` of the WIT package in `wit_dir`.
/// `constants` become string constants of the module [`BUILD_CONFIG_MODULE`]. The component is
/// written to `out` and returned.
pub fn build_python_component(
    app_dir: &Path,
    module: &str,
    wit_dir: &Path,
    world: &str,
    constants: &[(&str, &str)],
    toolchains: &Path,
    out: &Path,
) -> Result<Vec<u8>, GuestBuildError> {
    let exe = toolchain(toolchains)?;
    let out_dir = out.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(out_dir).map_err(GuestBuildError::io("create the output directory", out_dir))?;
    let mut command = Command::new(&exe);
    command.arg("-d").arg(wit_dir).arg("-w").arg(world).args(["componentize", "--stub-wasi", module]);
    command.arg("-p").arg(app_dir);
    // The constants live beside the output, never in the author's source directory.
    let config_dir = out_dir.join(format!("{BUILD_CONFIG_MODULE}.d"));
    let _ = fs::remove_dir_all(&config_dir);
    if !constants.is_empty() {
        fs::create_dir_all(&config_dir).map_err(GuestBuildError::io("create the build constants", &config_dir))?;
        let text: String =
            constants.iter().map(|(k, v)| format!("{k} = {}\n", serde_json::Value::String((*v).to_owned()))).collect();
        let path = config_dir.join(format!("{BUILD_CONFIG_MODULE}.py"));
        fs::write(&path, text).map_err(GuestBuildError::io("write the build constants", &path))?;
        command.arg("-p").arg(&config_dir);
    }
    command.arg("-o").arg(out).env_remove("VIRTUAL_ENV").env_remove("PYTHONPATH").stdin(Stdio::null());
    run_tool(&mut command, INSTALL_PYTHON, |stderr| {
        if stderr.contains("ModuleNotFoundError") {
            Some("every module the guest imports must be importable at build time (pass its directory)".to_owned())
        } else if stderr.contains("has no attribute") || stderr.contains("is not a subclass") {
            Some(format!("define the export class named after the world's interface, e.g. `class PaymentChargeV1Api(exports.PaymentChargeV1Api)` in {module}.py"))
        } else {
            None
        }
    })?;
    fs::read(out).map_err(GuestBuildError::io("read the built component", out))
}
