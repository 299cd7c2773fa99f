//! `vadyl guest new` and `vadyl guest build`: a connector guest in Rust, C, Python or JavaScript
//! that builds and passes `vadyl connector test` as it is, and the one command that builds any of
//! them.
//!
//! The templates are the example guests under `guests/` themselves (embedded at compile time), so
//! what a new author starts from is exactly what the test suite builds, conforms, binds and
//! invokes. A scaffold is self-contained: the sources, the descriptor, a copy of the WIT package
//! (`wit/`), `vadyl-guest.json` (language, contract, world, entry file) and a README with the
//! commands, including the by-hand equivalent of `guest build`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::GuestBuildError;

/// A guest language `vadyl guest new` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    C,
    Python,
    Js,
}

impl std::str::FromStr for Lang {
    type Err = ScaffoldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(Self::Rust),
            "c" => Ok(Self::C),
            "python" | "py" => Ok(Self::Python),
            "js" | "javascript" => Ok(Self::Js),
            other => Err(ScaffoldError::UnknownLang(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rust => "rust",
            Self::C => "c",
            Self::Python => "python",
            Self::Js => "js",
        })
    }
}

/// `vadyl-guest.json`: what `guest build` needs to know about a scaffolded guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestManifest {
    pub lang: Lang,
    /// `kind@major`.
    pub contract: String,
    /// The WIT world, e.g. `payment-charge-v1`.
    pub world: String,
    /// The entry file: the Python module or the JavaScript source (the Rust crate and the C sources
    /// are found by their build).
    pub entry: Option<String>,
}

/// The manifest's file name in a guest directory.
pub const GUEST_MANIFEST: &str = "vadyl-guest.json";

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("unknown language {0:?}: choose rust, c, python or js")]
    UnknownLang(String),
    #[error("there is no {lang} template for {contract}; {lang} templates exist for: {available}")]
    NoTemplate { lang: Lang, contract: String, available: String },
    #[error("{} exists and is not empty: choose a new directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} has no readable {GUEST_MANIFEST}: {reason} (was it made by `vadyl guest new`?)", .dir.display())]
    NoManifest { dir: PathBuf, reason: String },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] GuestBuildError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + 'a {
    move |source| ScaffoldError::Io { action, path: path.to_owned(), source }
}

struct Template {
    lang: Lang,
    contract: &'static str,
    world: &'static str,
    entry: Option<&'static str>,
    files: &'static [(&'static str, &'static str)],
}

macro_rules! guest_file {
    ($guest:literal, $name:literal) => {
        ($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/guests/", $guest, "/", $name)))
    };
}

const TEMPLATES: &[Template] = &[
    Template {
        lang: Lang::Rust,
        contract: "payment.charge@1",
        world: "payment-charge-v1",
        entry: None,
        files: &[
            guest_file!("stripe-charge-rust", "Cargo.toml"),
            guest_file!("stripe-charge-rust", "Cargo.lock"),
            guest_file!("stripe-charge-rust", "rustfmt.toml"),
            guest_file!("stripe-charge-rust", "vadyl-descriptor.json"),
            guest_file!("stripe-charge-rust", "src/lib.rs"),
            guest_file!("stripe-charge-rust", "src/charge.rs"),
            guest_file!("stripe-charge-rust", "src/refund.rs"),
            guest_file!("stripe-charge-rust", "src/operation.rs"),
            guest_file!("stripe-charge-rust", "src/response.rs"),
            guest_file!("stripe-charge-rust", "src/form.rs"),
            guest_file!("stripe-charge-rust", "src/idempotency.rs"),
            guest_file!("stripe-charge-rust", "src/json.rs"),
            guest_file!("stripe-charge-rust", "src/telemetry.rs"),
        ],
    },
    Template {
        lang: Lang::C,
        contract: "webhook.deliver@1",
        world: "webhook-deliver-v1",
        entry: None,
        files: &[
            guest_file!("webhook-c", "webhook.c"),
            guest_file!("webhook-c", "libc/libc.c"),
            guest_file!("webhook-c", "libc/stdlib.h"),
            guest_file!("webhook-c", "libc/string.h"),
            guest_file!("webhook-c", "vadyl-descriptor.json"),
        ],
    },
    Template {
        lang: Lang::Python,
        contract: "payment.charge@1",
        world: "payment-charge-v1",
        entry: Some("app.py"),
        files: &[
            guest_file!("stripe-charge-python", "app.py"),
            guest_file!("stripe-charge-python", "vadyl-descriptor.json"),
        ],
    },
    Template {
        lang: Lang::Python,
        contract: "webhook.deliver@1",
        world: "webhook-deliver-v1",
        entry: Some("app.py"),
        files: &[guest_file!("webhook-python", "app.py"), guest_file!("webhook-python", "vadyl-descriptor.json")],
    },
    Template {
        lang: Lang::Js,
        contract: "webhook.deliver@1",
        world: "webhook-deliver-v1",
        entry: Some("webhook.js"),
        files: &[guest_file!("webhook-js", "webhook.js"), guest_file!("webhook-js", "vadyl-descriptor.json")],
    },
    Template {
        lang: Lang::Js,
        contract: "payment.charge@1",
        world: "payment-charge-v1",
        entry: Some("app.js"),
        files: &[guest_file!("stripe-charge-js", "app.js"), guest_file!("stripe-charge-js", "vadyl-descriptor.json")],
    },
];

/// The contracts `lang` has a template for.
pub fn contracts_for(lang: Lang) -> Vec<&'static str> {
    TEMPLATES.iter().filter(|t| t.lang == lang).map(|t| t.contract).collect()
}

/// Writes a new guest of `lang` for `contract` into `dir` (created; it must not hold anything yet).
/// Returns the files written, relative to `dir`.
pub fn new_guest(dir: &Path, lang: Lang, contract: &str) -> Result<Vec<String>, ScaffoldError> {
    let template = TEMPLATES.iter().find(|t| t.lang == lang && t.contract == contract).ok_or_else(|| {
        ScaffoldError::NoTemplate { lang, contract: contract.to_owned(), available: contracts_for(lang).join(", ") }
    })?;
    if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(dir.to_owned()));
    }
    let manifest = GuestManifest {
        lang,
        contract: contract.to_owned(),
        world: template.world.to_owned(),
        entry: template.entry.map(str::to_owned),
    };
    let mut files: Vec<(String, String)> =
        template.files.iter().map(|(name, text)| ((*name).to_owned(), adapt(name, text))).collect();
    for (name, text) in crate::contracts::embedded_wit() {
        files.push((format!("wit/{name}"), (*text).to_owned()));
    }
    files.push((GUEST_MANIFEST.to_owned(), serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n"));
    files.push(("README.md".to_owned(), readme(&manifest)));
    files.push((".gitignore".to_owned(), "/build\n/target\n__pycache__/\n".to_owned()));
    for (name, text) in &files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        fs::write(&path, text).map_err(io("write", &path))?;
    }
    Ok(files.into_iter().map(|(name, _)| name).collect())
}

/// The example's text as a standalone guest: the WIT package is the scaffold's own `wit/`.
fn adapt(name: &str, text: &str) -> String {
    if name == "src/lib.rs" {
        text.replace(r#"path: "../../wit/worlds/connector""#, r#"path: "wit""#)
    } else {
        text.to_owned()
    }
}

/// Where `guest build` writes the component unless told otherwise.
pub fn default_output(dir: &Path) -> PathBuf {
    dir.join("build").join("component.wasm")
}

/// Reads `dir/vadyl-guest.json`.
pub fn manifest(dir: &Path) -> Result<GuestManifest, ScaffoldError> {
    let path = dir.join(GUEST_MANIFEST);
    let failed = |reason: String| ScaffoldError::NoManifest { dir: dir.to_owned(), reason };
    let text = fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| failed(e.to_string()))
}

/// Builds the guest in `dir` with its language's toolchain and writes the component to `out`.
pub fn build_guest(dir: &Path, toolchains: &Path, out: &Path) -> Result<(GuestManifest, Vec<u8>), ScaffoldError> {
    let m = manifest(dir)?;
    let wit = dir.join("wit");
    let entry = || m.entry.clone().unwrap_or_default();
    let bytes = match m.lang {
        Lang::Rust => super::rust::build_rust_component(dir, &[], &[], &dir.join("target"))?,
        Lang::C => super::c::build_c_component(dir, &wit, &m.world, &[], &dir.join("build").join("c"))?,
        Lang::Python => {
            let module = entry();
            let module = module.trim_end_matches(".py");
            super::python::build_python_component(dir, module, &wit, &m.world, &[], toolchains, out)?
        }
        Lang::Js => super::js::build_js_component(&dir.join(entry()), &wit, &m.world, toolchains, out)?,
    };
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    fs::write(out, &bytes).map_err(io("write", out))?;
    Ok((m, bytes))
}

fn readme(m: &GuestManifest) -> String {
    let by_hand = match m.lang {
        Lang::Rust => "rustup target add wasm32-unknown-unknown\n\
                       cargo build --release --locked --target wasm32-unknown-unknown\n\
                       wasm-tools component new target/wasm32-unknown-unknown/release/*.wasm -o build/component.wasm"
            .to_owned(),
        Lang::C => format!(
            "wit-bindgen c --world {w} wit --out-dir build/c\n\
             clang --target=wasm32 -O2 -ffreestanding -nostdlibinc -I . -I build/c -I libc -c … (each .c)\n\
             wasm-ld --no-entry --strip-debug -o build/c/core.wasm build/c/*.o\n\
             wasm-tools component new build/c/core.wasm -o build/component.wasm",
            w = m.world
        ),
        Lang::Python => format!(
            "python3 -m venv .venv && .venv/bin/pip install componentize-py=={v}\n\
             .venv/bin/componentize-py -d wit -w {w} componentize --stub-wasi {module} -p . -o build/component.wasm",
            v = super::python::COMPONENTIZE_PY_VERSION,
            w = m.world,
            module = m.entry.as_deref().unwrap_or("app.py").trim_end_matches(".py"),
        ),
        Lang::Js => format!(
            "npm install --save-exact @bytecodealliance/componentize-js@{v}\n\
             npx componentize-js {entry} -w wit -n {w} -d stdio random clocks http fetch-event -o build/component.wasm",
            v = super::js::COMPONENTIZE_JS_VERSION,
            w = m.world,
            entry = m.entry.as_deref().unwrap_or("app.js"),
        ),
    };
    format!(
        "# A {contract} connector in {lang}\n\n\
         Made by `vadyl guest new`. It builds and passes the contract's conformance suite as it is;\n\
         change it, and keep it passing.\n\n\
         ```sh\n\
         vadyl guest build .        # the component, in build/component.wasm\n\
         vadyl connector test --wasm build/component.wasm --descriptor vadyl-descriptor.json --contract {contract}\n\
         ```\n\n\
         `connector test` runs every vector of the contract with the fixtures of `vadyl-descriptor.json`, locally:\n\
         no server, nothing published, no registry's log written. Each failed check says why.\n\n\
         `guest build` by hand:\n\n\
         ```sh\n{by_hand}\n```\n\n\
         `wit/` is the WIT package the host provides (world `{world}`); the guide is\n\
         `docs/authoring-components.md` in the Vadyl repository. When it passes: `vadyl connector build component`,\n\
         `vadyl connector conformance run`, bind and invoke.\n",
        contract = m.contract,
        lang = m.lang,
        world = m.world,
    )
}
