//! The architecture, kept by a test: reads the source tree and fails when a module imports across
//! the layers in the wrong direction, when sibling modules import each other in a circle, or when
//! `rusqlite`, `axum`, `wasmtime` or `anyhow` appear outside the modules ARCHITECTURE.md allows them
//! in. The rules below are the ones ARCHITECTURE.md states; change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import its own layer and the ones `may_import` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Domain,
    Runtime,
    App,
    Storage,
    Http,
    Binary,
    Tools,
}

impl Layer {
    fn of(module: &[String]) -> Layer {
        match module.first().map(String::as_str) {
            Some("ids" | "keys" | "events" | "projections" | "commands" | "contracts" | "report") => Layer::Domain,
            Some("runtime") => Layer::Runtime,
            Some("app") => Layer::App,
            Some("storage") => Layer::Storage,
            Some("http") => Layer::Http,
            Some("tools") => Layer::Tools,
            Some("main" | "cli") => Layer::Binary,
            other => panic!("module {other:?} is in no layer: add it to tests/layers.rs and ARCHITECTURE.md"),
        }
    }

    fn may_import(self, other: Layer) -> bool {
        use Layer::*;
        self == other
            || match self {
                Domain => false,
                Runtime => other == Domain,
                App => matches!(other, Domain | Runtime),
                // Storage implements the ports of the layers below it, and opens them (composition).
                Storage => matches!(other, Domain | Runtime | App),
                // The HTTP edge calls use cases; it never reaches a store.
                Http => matches!(other, Domain | Runtime | App),
                // The binary wires everything: stores, edges, tools.
                Binary => true,
                Tools => other != Binary,
            }
    }
}

/// Where each crate may be used (paths relative to `src/`, a trailing `/` for a whole directory).
const CRATE_HOMES: &[(&str, &[&str])] = &[
    // The raw-SQLite baseline of `bench log` measures the log against SQLite itself.
    ("rusqlite", &["storage/sqlite/", "tools/bench/"]),
    // The API, and the loopback servers the host runs (the conformance upstream) live in `http`;
    // `bench invoke` serves its upstream beside the product.
    ("axum", &["http/", "tools/bench/"]),
    ("wasmtime", &["runtime/component/", "tools/bench/"]),
    ("anyhow", &["main.rs", "cli/"]),
];

/// Test-only files may use a crate as a test double (a scripted axum server, a SQLite file read
/// directly): their names say so.
fn is_test_file(rel: &str) -> bool {
    rel.ends_with("/tests.rs") || rel.contains("/tests/")
}

struct SourceFile {
    rel: String,
    module: Vec<String>,
    /// Code with comments removed.
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src is readable").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `app/invoke.rs` -> `[app, invoke]`; `app/mod.rs` -> `[app]`; `lib.rs` -> `[]`.
fn module_of(rel: &str) -> Vec<String> {
    let without = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = without.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The code of a file without `//` comments (doc comments included: they may name any path).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sources() -> Vec<SourceFile> {
    let mut files = Vec::new();
    collect(&src_dir(), &mut files);
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src_dir()).ok()?.to_string_lossy().replace('\\', "/");
            if rel == "lib.rs" {
                return None;
            }
            let code = strip_comments(&std::fs::read_to_string(&p).expect("a source file is readable"));
            Some(SourceFile { module: module_of(&rel), rel, code })
        })
        .collect()
}

/// The crate-internal module paths a file names: `crate::a::b…` in the library, `vadyl::a::b…` in
/// the binary; each as its identifier segments.
fn imports(file: &SourceFile) -> Vec<Vec<String>> {
    let prefix = if Layer::of(&file.module) == Layer::Binary { "vadyl::" } else { "crate::" };
    let mut out = Vec::new();
    let code = &file.code;
    let mut from = 0;
    while let Some(i) = code[from..].find(prefix) {
        let start = from + i;
        from = start + prefix.len();
        // `crate::` must start a path, not end a longer name (`my_crate::`).
        if code[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[from..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        let segments: Vec<String> = rest[..end].split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if !segments.is_empty() {
            out.push(segments);
        }
    }
    // Grouped imports name their modules inside braces: `use crate::{app::App, ids::X}`.
    for group in code.match_indices(&format!("{prefix}{{")) {
        let rest = &code[group.0 + prefix.len() + 1..];
        let body = &rest[..rest.find('}').unwrap_or(rest.len())];
        for item in body.split(',') {
            let segments: Vec<String> = item
                .trim()
                .split("::")
                .map(|s| s.trim().trim_start_matches('{').to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if !segments.is_empty() {
                out.push(segments);
            }
        }
    }
    out
}

/// The longest known module that `path` starts with (a path names a module, then items in it).
fn target_module(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p))
}

fn layer_violations(files: &[SourceFile]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut problems = Vec::new();
    for f in files {
        let from = Layer::of(&f.module);
        for path in imports(f) {
            let Some(target) = target_module(&path, &modules) else { continue };
            let to = Layer::of(&target);
            if !from.may_import(to) {
                problems.push(format!(
                    "src/{} ({from:?}) imports {} ({to:?}): a {from:?} module may not depend on the {to:?} layer",
                    f.rel,
                    path.join("::")
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

fn crate_violations(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();
    for f in files {
        for (name, homes) in CRATE_HOMES {
            let used = f.code.contains(&format!("{name}::")) || f.code.contains(&format!("use {name};"));
            let allowed = homes.iter().any(|h| if h.ends_with('/') { f.rel.starts_with(h) } else { f.rel == *h });
            if used && !allowed && !is_test_file(&f.rel) {
                problems.push(format!("src/{} uses `{name}`, which only {} may use", f.rel, homes.join(", ")));
            }
        }
    }
    problems
}

/// Circles among sibling modules: for each parent, the graph of its children where an edge says a
/// file under one child names a module under another. A parent's own file is its interface, which
/// its children may use, so parent <-> child references are not circles.
fn circles(files: &[SourceFile]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    // parent -> child -> set of sibling children it depends on
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in files {
        // The binary's modules are `main` and `cli…`; the library's are everything else.
        for path in imports(f) {
            let Some(target) = target_module(&path, &modules) else { continue };
            let common = f.module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= f.module.len() || common >= target.len() {
                continue; // one contains the other: parent and child
            }
            let parent = f.module[..common].to_vec();
            graphs
                .entry(parent)
                .or_default()
                .entry(f.module[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    let mut found = Vec::new();
    for (parent, graph) in &graphs {
        for cycle in find_cycles(graph) {
            let at = if parent.is_empty() { "crate".to_owned() } else { parent.join("::") };
            found.push(format!("{at}: {}", cycle.join(" -> ")));
        }
    }
    found
}

/// One cycle per strongly connected component with more than one node (Tarjan), each written as
/// a path that returns to its start.
fn find_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        components: Vec<Vec<&'g str>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.components.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.components
        .into_iter()
        .map(|component| {
            // Walk from the first node through the component back to it.
            let members: BTreeSet<&str> = component.iter().copied().collect();
            let start = component[component.len() - 1];
            let mut path = vec![start.to_owned()];
            let mut seen = BTreeSet::from([start]);
            let mut at = start;
            loop {
                let next = graph[at]
                    .iter()
                    .map(String::as_str)
                    .find(|n| members.contains(n) && (*n == start || !seen.contains(n)));
                match next {
                    Some(n) if n == start => {
                        path.push(n.to_owned());
                        break;
                    }
                    Some(n) => {
                        seen.insert(n);
                        path.push(n.to_owned());
                        at = n;
                    }
                    None => {
                        path.push("…".to_owned());
                        break;
                    }
                }
            }
            path
        })
        .collect()
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let problems = layer_violations(&sources());
    assert!(problems.is_empty(), "imports against the layers (see ARCHITECTURE.md):\n{}", problems.join("\n"));
}

#[test]
fn rusqlite_axum_wasmtime_and_anyhow_stay_in_their_modules() {
    let problems = crate_violations(&sources());
    assert!(problems.is_empty(), "crates outside their modules (see ARCHITECTURE.md):\n{}", problems.join("\n"));
}

#[test]
fn no_sibling_modules_import_each_other_in_a_circle() {
    let found = circles(&sources());
    assert!(found.is_empty(), "import circles among sibling modules:\n{}", found.join("\n"));
}

/// The checks themselves can fail: each rule is shown a tree that breaks it.
#[test]
fn the_checks_catch_what_they_are_for() {
    let file =
        |rel: &str, code: &str| SourceFile { rel: rel.to_owned(), module: module_of(rel), code: code.to_owned() };
    let tree = vec![
        file(
            "app/invoke.rs",
            "use crate::storage::sqlite::log::SqliteStore;\nfn f() { rusqlite::Connection::open(\"x\"); }",
        ),
        file("app/lifecycle.rs", "use crate::app::invoke::X;"),
        file("app/records.rs", "use crate::{app::lifecycle::Y, ids::Z};\nfn g() -> anyhow::Result<()> { Ok(()) }"),
        file("http/mod.rs", "use crate::storage::open;\nuse axum::Router;"),
        file("storage/mod.rs", ""),
        file("storage/sqlite/log.rs", "use rusqlite::Connection;"),
        file("ids.rs", "// crate::app::App in a comment is not an import\n"),
    ];
    let layers = layer_violations(&tree);
    assert!(
        layers.iter().any(|p| p.starts_with("src/app/invoke.rs") && p.contains("storage::sqlite::log")),
        "{layers:?}"
    );
    assert!(layers.iter().any(|p| p.starts_with("src/http/mod.rs") && p.contains("storage::open")), "{layers:?}");
    assert_eq!(layers.len(), 2, "only those two cross the layers: {layers:?}");
    let crates = crate_violations(&tree);
    assert!(crates.iter().any(|p| p.contains("src/app/invoke.rs uses `rusqlite`")), "{crates:?}");
    assert!(crates.iter().any(|p| p.contains("src/app/records.rs uses `anyhow`")), "{crates:?}");
    assert_eq!(crates.len(), 2, "axum in http and rusqlite in storage are allowed: {crates:?}");
    let mut circular = tree;
    circular.push(file("app/invoke.rs", "use crate::app::records::R;"));
    let found = circles(&circular);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("app: ") && found[0].contains("lifecycle") && found[0].contains("records"),
        "{found:?}"
    );
}
