//! Builds a WebAssembly component from C sources, so connector authors can write components in C
//! and the test suite can build its C example (`guests/webhook-c/`) from source instead of shipping
//! a binary.
//!
//! The pipeline has four steps; an error names the step and the command that failed:
//!
//! 1. **Bindings.** The WIT package is parsed with `wit-parser` and `wit-bindgen-c` writes the C
//!    bindings of the world into `out_dir`: `<world>.h`, `<world>.c` and `<world>_component_type.o`
//!    (a wasm object whose custom section carries the world's type, which the encoder reads later).
//! 2. **Compile.** Every `*.c` of `source_dir`, of `source_dir/libc/` (a freestanding libc shim, when
//!    present) and the generated `<world>.c` are compiled with clang for `wasm32` — freestanding, no
//!    WASI, no system headers: only clang's own (`stdint.h`, `stdbool.h`, `stddef.h`) and the shim.
//! 3. **Link.** `wasm-ld` links the objects and the component-type object into a core module with
//!    no entry point. The generated code marks its exports (`cabi_realloc`, the world's functions
//!    and their `cabi_post_*` cleanups) with `export_name`, so nothing else is exported.
//! 4. **Componentize.** `wit-component` wraps the core module into a component, validating it.
//!
//! The tools are Debian's `clang` and `wasm-ld` (package `lld`). They are searched on `PATH`, also
//! under their versioned names (`clang-14`, `wasm-ld-14`), and `wasm-ld` first next to the clang that
//! was found, so a matching LLVM pair is preferred. They run through the parent module's `run_tool`,
//! with hints for the usual mistakes (no libc shim, an unimplemented export). Every intermediate file
//! stays in `out_dir` for inspection; the component is also written there as `<world>.wasm`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use wit_bindgen_core::Files;
use wit_parser::Resolve;

use super::{componentize, run_tool, GuestBuildError};

/// What to install when clang or wasm-ld is missing.
const INSTALL: &str = "install clang and wasm-ld with `apt-get install clang lld` (Debian/Ubuntu)";

/// LLVM major versions tried when the unversioned tool name is not on `PATH`, newest first.
const LLVM_VERSIONS: std::ops::RangeInclusive<u32> = 14..=22;

/// Flags for every translation unit: 32-bit wasm, no hosted environment, no system headers.
const CFLAGS: &[&str] =
    &["--target=wasm32", "-O2", "-ffreestanding", "-nostdlibinc", "-Wall", "-Werror=implicit-function-declaration"];

/// Generates C bindings for `world` from the WIT package, compiles `source_dir`/*.c with clang for wasm32 and
/// turns the linked module into a component with wit-component's encoder.
///
/// `wit_dir` is the directory of the WIT package (e.g. `wit/worlds/connector`); `world` is a world
/// name in it. Sources are `source_dir/*.c` and, when `source_dir/libc/` exists, `source_dir/libc/*.c`;
/// both directories and `out_dir` are on the include path. `defines` become `-DNAME=VALUE`.
/// Returns the encoded component, which is also written to `out_dir/<world>.wasm`.
pub fn build_c_component(
    source_dir: &Path,
    wit_dir: &Path,
    world: &str,
    defines: &[(&str, &str)],
    out_dir: &Path,
) -> Result<Vec<u8>, GuestBuildError> {
    fs::create_dir_all(out_dir).map_err(GuestBuildError::io("create the output directory", out_dir))?;
    let bindings = generate_bindings(wit_dir, world, out_dir)?;
    let clang = find_tool("clang", &search_path())?;
    let wasm_ld = find_wasm_ld(&clang)?;

    let libc_dir = source_dir.join("libc");
    let mut include_dirs = vec![source_dir.to_path_buf(), out_dir.to_path_buf()];
    let mut sources = c_files_in(source_dir)?;
    if libc_dir.is_dir() {
        sources.extend(c_files_in(&libc_dir)?);
        include_dirs.push(libc_dir);
    }
    sources.push(bindings.source);

    let mut objects = Vec::with_capacity(sources.len() + 1);
    for (index, source) in sources.iter().enumerate() {
        let stem = source.file_stem().map_or_else(|| "source".into(), |s| s.to_string_lossy().into_owned());
        let object = out_dir.join(format!("{index:02}-{stem}.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(CFLAGS);
        for dir in &include_dirs {
            cmd.arg("-I").arg(dir);
        }
        for (name, value) in defines {
            cmd.arg(format!("-D{name}={value}"));
        }
        cmd.arg("-c").arg(source).arg("-o").arg(&object);
        run_tool(&mut cmd, INSTALL, clang_hint)?;
        objects.push(object);
    }
    objects.push(bindings.component_type);

    let core_path = out_dir.join(format!("{world}.core.wasm"));
    let mut link = Command::new(&wasm_ld);
    link.args(["--no-entry", "--strip-debug", "--stack-first", "-z", "stack-size=65536", "-o"])
        .arg(&core_path)
        .args(&objects);
    run_tool(&mut link, INSTALL, link_hint)?;

    let core = fs::read(&core_path).map_err(GuestBuildError::io("read the core module", &core_path))?;
    let component = componentize(&core, &core_path)?;
    let component_path = out_dir.join(format!("{world}.wasm"));
    fs::write(&component_path, &component).map_err(GuestBuildError::io("write the component", &component_path))?;
    Ok(component)
}

/// The generated files the build needs.
struct Bindings {
    /// `<world>.c`: the canonical-ABI glue.
    source: PathBuf,
    /// `<world>_component_type.o`: the world's type, for the component encoder.
    component_type: PathBuf,
}

/// Parses the WIT package in `wit_dir` and writes the C bindings of `world` into `out_dir`.
fn generate_bindings(wit_dir: &Path, world: &str, out_dir: &Path) -> Result<Bindings, GuestBuildError> {
    // The equivalent command line of the wit-bindgen CLI, to name the step in errors.
    let command = format!("wit-bindgen c --world {world} {}", wit_dir.display());
    let failed = |e| GuestBuildError::BuildFailed {
        command: command.clone(),
        status: "the in-process generator failed".to_owned(),
        hint: None,
        stderr_tail: format!("{e:#}"),
    };
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(wit_dir).map_err(failed)?;
    let world_id = resolve.select_world(&[package], Some(world)).map_err(failed)?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world_id, &mut files).map_err(failed)?;

    let (mut source, mut component_type) = (None, None);
    for (name, contents) in files.iter() {
        let path = out_dir.join(name);
        fs::write(&path, contents).map_err(GuestBuildError::io("write the generated bindings", &path))?;
        if name.ends_with("_component_type.o") {
            component_type = Some(path);
        } else if name.ends_with(".c") {
            source = Some(path);
        }
    }
    match (source, component_type) {
        (Some(source), Some(component_type)) => Ok(Bindings { source, component_type }),
        _ => Err(GuestBuildError::MissingOutput(format!(
            "`{command}` wrote {:?}, without a .c file or a _component_type.o",
            files.iter().map(|(name, _)| name).collect::<Vec<_>>()
        ))),
    }
}

/// The `*.c` files directly in `dir`, sorted so builds are reproducible.
fn c_files_in(dir: &Path) -> Result<Vec<PathBuf>, GuestBuildError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(GuestBuildError::io("list the C sources in", dir))? {
        let path = entry.map_err(GuestBuildError::io("list the C sources in", dir))?.path();
        if path.extension().is_some_and(|ext| ext == "c") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What to do about a clang failure whose cause is known.
fn clang_hint(stderr: &str) -> Option<String> {
    if stderr.contains("No available targets are compatible") {
        Some("this clang has no WebAssembly backend; use Debian's clang (`apt-get install clang lld`)".to_owned())
    } else if stderr.contains("'stdlib.h' file not found") || stderr.contains("'string.h' file not found") {
        Some(
            "there is no C library for components: put freestanding headers in `libc/` next to the sources, as \
              guests/webhook-c/libc does"
                .to_owned(),
        )
    } else {
        None
    }
}

/// What to do about a wasm-ld failure whose cause is known.
fn link_hint(stderr: &str) -> Option<String> {
    stderr.contains("undefined symbol").then(|| {
        "a function is declared but not defined: the C library functions come from `libc/*.c`, and every export \
         of the world must be implemented"
            .to_owned()
    })
}

/// The directories of `PATH`.
fn search_path() -> Vec<PathBuf> {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default()
}

/// Finds `tool` (or `tool-<version>`) in `dirs`; the unversioned name wins, then the newest version.
fn find_tool(tool: &str, dirs: &[PathBuf]) -> Result<PathBuf, GuestBuildError> {
    let names = std::iter::once(OsString::from(tool)).chain(LLVM_VERSIONS.rev().map(|v| format!("{tool}-{v}").into()));
    for name in names {
        if let Some(found) = dirs.iter().map(|dir| dir.join(&name)).find(|path| path.is_file()) {
            return Ok(found);
        }
    }
    Err(GuestBuildError::ToolUnavailable {
        tool: tool.to_owned(),
        install: INSTALL.to_owned(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            format!("neither {tool} nor {tool}-{}..{tool}-{} is on PATH", LLVM_VERSIONS.start(), LLVM_VERSIONS.end()),
        ),
    })
}

/// Finds `wasm-ld`, preferring the one of the same LLVM installation as `clang` (Debian's
/// `/usr/bin/clang` links to `/usr/lib/llvm-N/bin/clang`, next to `wasm-ld` when lld is installed).
fn find_wasm_ld(clang: &Path) -> Result<PathBuf, GuestBuildError> {
    if let Some(sibling) = fs::canonicalize(clang).ok().and_then(|c| c.parent().map(|dir| dir.join("wasm-ld"))) {
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    find_tool("wasm-ld", &search_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wit/worlds/connector");
    const WEBHOOK_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guests/webhook-c");

    #[test]
    fn the_c_webhook_guest_builds_into_a_component_that_imports_only_vadyl_interfaces() {
        let out = tempfile::tempdir().unwrap();
        let bytes =
            build_c_component(Path::new(WEBHOOK_C), Path::new(WIT_DIR), "webhook-deliver-v1", &[], out.path()).unwrap();
        assert!(out.path().join("webhook-deliver-v1.wasm").is_file());
        let wit_component::DecodedWasm::Component(resolve, world) = wit_component::decode(&bytes).unwrap() else {
            panic!("the build produced a WIT package, not a component")
        };
        let world = &resolve.worlds[world];
        let name = |key: &wit_parser::WorldKey| resolve.name_world_key(key);
        let mut imports: Vec<String> = world.imports.keys().map(name).collect();
        let exports: Vec<String> = world.exports.keys().map(name).collect();
        imports.sort();
        // No WASI: only the host interfaces the connector calls (the encoder drops unused ones).
        assert_eq!(
            imports,
            ["egress", "observability", "secrets", "time", "types"].map(|i| format!("vadyl:connector/{i}@1.0.0"))
        );
        assert_eq!(exports, ["vadyl:connector/webhook-deliver-v1-api@1.0.0"]);
    }

    #[test]
    fn a_c_compile_error_reports_the_command_and_what_clang_said() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("broken.c"), "int main( {\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = build_c_component(src.path(), Path::new(WIT_DIR), "webhook-deliver-v1", &[("X", "1")], out.path())
            .unwrap_err();
        let GuestBuildError::BuildFailed { command, stderr_tail, .. } = err else { panic!("{err:?}") };
        assert!(command.contains("broken.c") && command.contains("-DX=1"), "{command}");
        assert!(stderr_tail.contains("error"), "{stderr_tail}");
    }

    #[test]
    fn a_module_importing_wasi_does_not_componentize() {
        let src = sources_with_libc(
            "wasi.c",
            r#"#include "webhook_deliver_v1.h"
__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_exit"))) void proc_exit(int);
void exports_vadyl_connector_webhook_deliver_v1_api_deliver(
    exports_vadyl_connector_webhook_deliver_v1_api_deliver_input_t *input,
    exports_vadyl_connector_webhook_deliver_v1_api_list_egress_exchange_t *exchanges,
    exports_vadyl_connector_webhook_deliver_v1_api_deliver_step_t *ret) { proc_exit(1); }
"#,
        );
        let out = tempfile::tempdir().unwrap();
        let err = build_c_component(src.path(), Path::new(WIT_DIR), "webhook-deliver-v1", &[], out.path()).unwrap_err();
        let GuestBuildError::Componentize { reason, .. } = err else { panic!("{err:?}") };
        assert!(reason.contains("wasi_snapshot_preview1"), "{reason}");
    }

    /// A source directory holding `code` as `c_file`, next to a copy of webhook-c's libc shim.
    fn sources_with_libc(c_file: &str, code: &str) -> tempfile::TempDir {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join(c_file), code).unwrap();
        fs::create_dir(src.path().join("libc")).unwrap();
        for file in ["libc.c", "stdlib.h", "string.h"] {
            fs::copy(Path::new(WEBHOOK_C).join("libc").join(file), src.path().join("libc").join(file)).unwrap();
        }
        src
    }

    #[test]
    fn sources_without_a_libc_shim_are_told_where_it_comes_from() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("empty.c"), "int unused;\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = build_c_component(src.path(), Path::new(WIT_DIR), "webhook-deliver-v1", &[], out.path()).unwrap_err();
        let GuestBuildError::BuildFailed { stderr_tail, hint: Some(hint), .. } = &err else { panic!("{err:?}") };
        assert!(stderr_tail.contains("stdlib.h"), "{stderr_tail}");
        assert!(hint.contains("libc/"), "{hint}");
    }

    #[test]
    fn an_unimplemented_export_fails_to_link_with_a_hint() {
        let src = sources_with_libc("empty.c", "int unused;\n");
        let out = tempfile::tempdir().unwrap();
        let err = build_c_component(src.path(), Path::new(WIT_DIR), "webhook-deliver-v1", &[], out.path()).unwrap_err();
        let GuestBuildError::BuildFailed { command, stderr_tail, hint: Some(hint), .. } = &err else {
            panic!("{err:?}")
        };
        assert!(command.contains("wasm-ld"), "{command}");
        assert!(stderr_tail.contains("exports_vadyl_connector_webhook_deliver_v1_api_deliver"), "{stderr_tail}");
        assert!(hint.contains("every export"), "{hint}");
    }

    #[test]
    fn an_unknown_world_is_a_binding_failure() {
        let out = tempfile::tempdir().unwrap();
        let err =
            build_c_component(Path::new(WEBHOOK_C), Path::new(WIT_DIR), "no-such-world", &[], out.path()).unwrap_err();
        let GuestBuildError::BuildFailed { command, stderr_tail, .. } = err else { panic!("{err:?}") };
        assert!(command.contains("no-such-world"), "{command}");
        assert!(stderr_tail.contains("no-such-world"), "{stderr_tail}");
    }

    #[test]
    fn a_missing_tool_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_tool("clang", &[empty.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("apt-get install clang lld"), "{err}");
        let GuestBuildError::ToolUnavailable { tool, .. } = err else { panic!("{err:?}") };
        assert_eq!(tool, "clang");
    }

    #[test]
    fn a_versioned_tool_is_found_when_the_plain_name_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("wasm-ld-14"), "").unwrap();
        fs::write(dir.path().join("wasm-ld-16"), "").unwrap();
        assert_eq!(find_tool("wasm-ld", &[dir.path().to_path_buf()]).unwrap(), dir.path().join("wasm-ld-16"));
        fs::write(dir.path().join("wasm-ld"), "").unwrap();
        assert_eq!(find_tool("wasm-ld", &[dir.path().to_path_buf()]).unwrap(), dir.path().join("wasm-ld"));
    }
}
