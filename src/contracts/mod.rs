//! Contract catalogue: the `vadyl:connector` WIT package, parsed and checked.
//!
//! The WIT package under `wit/worlds/connector/` is the source of truth. It holds
//! the shared `types` interface, the six host-import interfaces (`memory`,
//! `observability`, `secrets`, `egress`, `time`, `capability`) and one world per
//! contract. This module parses it (from the copy embedded in the binary, or from
//! a directory), checks it, and derives a [`Catalogue`]: the 19 host imports and,
//! for each contract, its operations with JSON Schemas, its sensitive fields and a
//! semantic digest.
//!
//! # Package rules
//!
//! * Every world of the package is a contract world and must carry the tag
//!   `@contract <kind>@<major>` in its doc comment (e.g. `@contract payment.charge@1`).
//!   `kind` is two or more dot-separated segments of `[a-z][a-z0-9-]*`; `major` is a
//!   decimal `u32`. A `kind@major` may be declared by one world only.
//! * A contract world exports exactly one named interface of the package: its
//!   operations. Importing interfaces is allowed (the host interfaces, typically);
//!   [`Catalogue::host_imports`] is always derived from the six host interfaces only.
//! * Each function `op` of the exported interface follows the step calling convention:
//!   ```wit
//!   variant op-step { done(op-output), egress(plan-id), failed(contract-error) }
//!   op: func(input: op-input, exchanges: list<egress-exchange>) -> op-step;
//!   ```
//!   exactly these two parameter names, a result variant named `<op>-step` with exactly
//!   the cases `done(T)`, `egress(types.plan-id)` and `failed(types.contract-error)`,
//!   and a record as input type. Resource, future, stream and error-context types are
//!   refused anywhere in input, output or error.
//! * A host import is named `<Interface><Function>` in PascalCase
//!   (`memory`/`get-snapshot` -> `MemoryGetSnapshot`).
//!
//! # JSON conventions (JSON Schema draft 2020-12)
//!
//! The JSON <-> WIT bridge follows exactly these rules:
//!
//! | WIT | JSON |
//! | --- | --- |
//! | `record` | object; property names are the lowerCamelCase of the field names (`idempotency-key` -> `idempotencyKey`, see [`json_field_name`]); every non-`option` field is required; no other properties |
//! | `option<T>` field | may be omitted or `null` |
//! | `option<T>` elsewhere | `T` or `null` (`option<option<T>>` is refused as ambiguous) |
//! | `bool` / `string` | boolean / string |
//! | `char` | string of exactly one Unicode scalar value |
//! | `u8`..`u64`, `s8`..`s64` | integer within the type's range (`u64` up to 18446744073709551615) |
//! | `f32` / `f64` | number (no NaN or infinities) |
//! | `list<T>` (including `list<u8>`) | array of `T` (bytes are integers 0..=255) |
//! | `list<T, N>` | array of exactly `N` items |
//! | `tuple<A, B, ..>` | array with `prefixItems`, `minItems` = `maxItems` = arity |
//! | `enum` | string, the case name exactly as written in WIT (kebab-case) |
//! | `variant` | case without payload: the string `"case"`; case with payload: `{"case": payload}` (case names as written in WIT) |
//! | `result<T, E>` | `{"ok": T}` / `{"err": E}`; a missing payload is the plain string `"ok"` / `"err"` |
//! | `flags` | array of unique flag names |
//! | `map<K, V>` | array of `[key, value]` pairs |
//! | type aliases / `use` | resolved; every type is inlined (no `$ref`) |
//!
//! Schemas carry `description` from doc comments (with the `@sensitive` tag removed).
//! A record field whose doc comment contains `@sensitive` gets `"x-vadyl-sensitive": true`
//! on its property schema, plus `"writeOnly": true` in input schemas, and is listed in
//! [`ContractSpec::sensitive_fields`] as a JSON Pointer (RFC 6901) into the operation's
//! input or output value. Pointers descend through records (property name), variants
//! and results (`/case`), tuples (`/0`) and options (transparently); the reference token
//! `*` stands for every element of an array (JSON property names can never be `*`).
//!
//! `input_schema` is the schema of the `input` parameter, `output_schema` that of the
//! `done` payload, `error_schema` that of `contract-error`. Each root carries
//! `"$schema": "https://json-schema.org/draft/2020-12/schema"`.
//!
//! # Digest
//!
//! [`ContractSpec::wit_digest`] is the SHA-256 of the RFC 8785 canonical JSON of
//! `{package, world, interface, operations, sensitiveFields}` (operations serialized as
//! [`OperationSpec`], schemas included). Whitespace, file layout and unrelated items
//! do not change it; any change to an operation's shape, names, doc comments or
//! sensitivity does. Note that wit-parser 0.254 attaches *every* comment preceding an
//! item (`//` and `/* */` included, not only `///`) to its docs.

mod schema;
#[cfg(test)]
mod tests;
pub mod vectors;

use std::path::Path;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use wit_parser::{
    FunctionKind, InterfaceId, PackageId, Resolve, SourceMap, Type, TypeDefKind, TypeOwner, WorldId, WorldItem,
};

pub use schema::json_field_name;
use schema::{SchemaBuilder, TypeError};

/// The six host-import interfaces, in catalogue order.
pub const HOST_INTERFACES: [&str; 6] = ["memory", "observability", "secrets", "egress", "time", "capability"];

/// The interface holding the shared types of the calling convention.
pub const SHARED_INTERFACE: &str = "types";

/// Doc-comment tag mapping a world to its contract.
pub const CONTRACT_TAG: &str = "@contract";

macro_rules! wit_file {
    ($name:literal) => {
        ($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/worlds/connector/", $name)))
    };
}

/// The WIT package's files (name, text), as embedded in this binary: what a guest builds against.
pub fn embedded_wit() -> &'static [(&'static str, &'static str)] {
    EMBEDDED
}

static EMBEDDED: &[(&str, &str)] = &[
    wit_file!("types.wit"),
    wit_file!("memory.wit"),
    wit_file!("observability.wit"),
    wit_file!("secrets.wit"),
    wit_file!("egress.wit"),
    wit_file!("time.wit"),
    wit_file!("capability.wit"),
    wit_file!("payment-charge.wit"),
    wit_file!("webhook-deliver.wit"),
];

/// The WIT files compiled into the binary: `(file name, text)`.
pub fn embedded_sources() -> &'static [(&'static str, &'static str)] {
    EMBEDDED
}

/// Everything the WIT package defines.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalogue {
    /// Contracts sorted by kind, then major version.
    pub contracts: Vec<ContractSpec>,
    /// The host imports, by interface (in [`HOST_INTERFACES`] order) then declaration order.
    pub host_imports: Vec<HostImport>,
}

impl Catalogue {
    /// The contract `kind@major`, if defined.
    pub fn contract(&self, kind: &str, major_version: u32) -> Option<&ContractSpec> {
        self.contracts.iter().find(|c| c.kind == kind && c.major_version == major_version)
    }

    /// The host import with this fully qualified interface and function name, if any.
    pub fn host_import(&self, interface: &str, function: &str) -> Option<&HostImport> {
        self.host_imports.iter().find(|h| h.interface == interface && h.function == function)
    }
}

/// One function a component may import from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostImport {
    /// Fully qualified interface, e.g. `vadyl:connector/memory@1.0.0`.
    pub interface: String,
    /// WIT function name, e.g. `get-snapshot`.
    pub function: String,
    /// Catalogue name, e.g. `MemoryGetSnapshot`.
    pub name: String,
}

/// A contract: a surface kind at a major version, with its operations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractSpec {
    /// Surface kind, e.g. `payment.charge`.
    pub kind: String,
    /// Major version, e.g. 1.
    pub major_version: u32,
    /// WIT package, e.g. `vadyl:connector@1.0.0`.
    pub package: String,
    /// World name, e.g. `payment-charge-v1`.
    pub world: String,
    /// Fully qualified exported interface, e.g. `vadyl:connector/payment-charge-v1-api@1.0.0`.
    pub interface: String,
    /// The world's doc comment without the `@contract` tag.
    pub description: String,
    /// Operations, in declaration order.
    pub operations: Vec<OperationSpec>,
    /// Sensitive fields of all operations.
    pub sensitive_fields: Vec<SensitiveField>,
    /// Semantic digest (see the module docs); serialized as lowercase hex.
    #[serde(serialize_with = "hex_digest")]
    pub wit_digest: [u8; 32],
}

impl ContractSpec {
    /// The operation named `name`, if any.
    pub fn operation(&self, name: &str) -> Option<&OperationSpec> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// `kind@major`, e.g. `payment.charge@1`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.kind, self.major_version)
    }
}

/// One operation of a contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationSpec {
    /// WIT function name, e.g. `charge`.
    pub name: String,
    /// The function's doc comment.
    pub description: String,
    /// Schema of the `input` parameter.
    pub input_schema: serde_json::Value,
    /// Schema of the `done` payload.
    pub output_schema: serde_json::Value,
    /// Schema of `contract-error`.
    pub error_schema: serde_json::Value,
}

/// A field whose value must be treated as sensitive (redacted in logs and events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveField {
    /// Operation name.
    pub operation: String,
    /// Whether the pointer applies to the input or the output.
    pub direction: Direction,
    /// JSON Pointer into the operation's input or output, e.g. `/source`.
    pub pointer: String,
}

/// Input or output of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Input,
    Output,
}

/// Why the WIT package could not be loaded into a catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read WIT sources at {path}: {message}")]
    Io { path: String, message: String },
    #[error("no .wit files found in {0}")]
    NoSources(String),
    #[error("invalid WIT: {0}")]
    Parse(String),
    #[error("the WIT package has no interface `{0}`")]
    MissingHostInterface(String),
    #[error("host interface `{interface}` is invalid: {reason}")]
    InvalidHostInterface { interface: String, reason: String },
    #[error("the WIT package has no shared type `{SHARED_INTERFACE}.{0}`")]
    MissingSharedType(String),
    #[error("world `{world}` has no `{CONTRACT_TAG} <kind>@<major>` tag in its doc comment")]
    MissingContractTag { world: String },
    #[error("world `{world}` has an invalid contract tag `{tag}`: {reason}")]
    InvalidContractTag { world: String, tag: String, reason: String },
    #[error("contract {kind}@{major} is declared twice, by world `{first}` and by world `{second}`")]
    DuplicateContract { kind: String, major: u32, first: String, second: String },
    #[error("world `{world}` is not a valid contract world: {reason}")]
    InvalidWorld { world: String, reason: String },
    #[error("world `{world}`, function `{function}` breaks the operation calling convention: {reason}")]
    CallingConvention { world: String, function: String, reason: String },
    #[error("world `{world}`, function `{function}`: type {ty} cannot be used in a contract: {reason}")]
    UnsupportedType { world: String, function: String, ty: String, reason: String },
    #[error("cannot compute the digest of contract {contract}: {message}")]
    Digest { contract: String, message: String },
}

/// Loads the catalogue from the WIT files embedded in the binary.
pub fn load_embedded() -> Result<Catalogue, ContractError> {
    load_sources(EMBEDDED)
}

/// Loads the catalogue from every `*.wit` file directly in `dir` (one package; `deps/` is not read).
pub fn load_dir(dir: &Path) -> Result<Catalogue, ContractError> {
    let io = |e: std::io::Error| ContractError::Io { path: dir.display().to_string(), message: e.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|ext| ext == "wit") && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ContractError::NoSources(dir.display().to_string()));
    }
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ContractError::Io { path: path.display().to_string(), message: e.to_string() })?;
        sources.push((path.display().to_string(), text));
    }
    let borrowed: Vec<(&str, &str)> = sources.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    load_sources(&borrowed)
}

/// Loads the catalogue from in-memory WIT files `(name, text)` forming one package.
/// The names only appear in error messages.
pub fn load_sources(sources: &[(&str, &str)]) -> Result<Catalogue, ContractError> {
    let (resolve, pkg) = parse_sources(sources)?;
    build_catalogue(&resolve, pkg)
}

/// The embedded WIT package, resolved: what the component runtime checks exports against and what
/// the JSON ↔ WIT bridge walks.
pub fn embedded_resolve() -> Result<(Resolve, PackageId), ContractError> {
    parse_sources(EMBEDDED)
}

fn parse_sources(sources: &[(&str, &str)]) -> Result<(Resolve, PackageId), ContractError> {
    if sources.is_empty() {
        return Err(ContractError::NoSources("the given source list".into()));
    }
    let mut map = SourceMap::new();
    for (name, text) in sources {
        map.push_str(name, *text);
    }
    let group = match map.parse() {
        Ok(group) => group,
        Err((map, e)) => return Err(ContractError::Parse(e.render(&map))),
    };
    let mut resolve = Resolve::new();
    let pkg = match resolve.push_group(group) {
        Ok(pkg) => pkg,
        Err(e) => return Err(ContractError::Parse(e.render(&resolve.source_map))),
    };
    Ok((resolve, pkg))
}

/// The shared types every operation signature refers to.
struct Shared {
    interface: InterfaceId,
    contract_error: Type,
}

fn build_catalogue(resolve: &Resolve, pkg: PackageId) -> Result<Catalogue, ContractError> {
    let package = &resolve.packages[pkg];
    let host_imports = host_imports(resolve, pkg)?;

    let shared_id = *package
        .interfaces
        .get(SHARED_INTERFACE)
        .ok_or_else(|| ContractError::MissingHostInterface(SHARED_INTERFACE.into()))?;
    let shared_type = |name: &str| {
        resolve.interfaces[shared_id]
            .types
            .get(name)
            .map(|id| Type::Id(*id))
            .ok_or_else(|| ContractError::MissingSharedType(name.into()))
    };
    shared_type("plan-id")?;
    shared_type("egress-exchange")?;
    let shared = Shared { interface: shared_id, contract_error: shared_type("contract-error")? };

    let mut contracts: Vec<ContractSpec> = Vec::new();
    for world in package.worlds.values() {
        let spec = build_contract(resolve, pkg, *world, &shared)?;
        if let Some(first) = contracts.iter().find(|c| c.kind == spec.kind && c.major_version == spec.major_version) {
            return Err(ContractError::DuplicateContract {
                kind: spec.kind,
                major: spec.major_version,
                first: first.world.clone(),
                second: spec.world,
            });
        }
        contracts.push(spec);
    }
    contracts.sort_by(|a, b| (&a.kind, a.major_version).cmp(&(&b.kind, b.major_version)));
    Ok(Catalogue { contracts, host_imports })
}

fn pascal_case(kebab: &str) -> String {
    let camel = json_field_name(kebab);
    let mut chars = camel.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn host_imports(resolve: &Resolve, pkg: PackageId) -> Result<Vec<HostImport>, ContractError> {
    let package = &resolve.packages[pkg];
    let mut out = Vec::new();
    for name in HOST_INTERFACES {
        let id = *package.interfaces.get(name).ok_or_else(|| ContractError::MissingHostInterface(name.into()))?;
        let interface = resolve.id_of(id).unwrap_or_else(|| package.name.interface_id(name));
        for function in resolve.interfaces[id].functions.values() {
            if function.kind != FunctionKind::Freestanding {
                return Err(ContractError::InvalidHostInterface {
                    interface: interface.clone(),
                    reason: format!("function `{}` must be a plain synchronous function", function.name),
                });
            }
            out.push(HostImport {
                interface: interface.clone(),
                function: function.name.clone(),
                name: format!("{}{}", pascal_case(name), pascal_case(&function.name)),
            });
        }
    }
    Ok(out)
}

/// Parses `@contract kind@major` out of a world's doc comment.
fn contract_tag(world: &str, docs: &str) -> Result<(String, u32), ContractError> {
    let words: Vec<&str> = docs.split_whitespace().collect();
    let positions: Vec<usize> = words.iter().enumerate().filter(|(_, w)| **w == CONTRACT_TAG).map(|(i, _)| i).collect();
    let invalid = |tag: &str, reason: &str| ContractError::InvalidContractTag {
        world: world.into(),
        tag: tag.into(),
        reason: reason.into(),
    };
    let pos = match positions.as_slice() {
        [] => return Err(ContractError::MissingContractTag { world: world.into() }),
        [pos] => *pos,
        _ => return Err(invalid(CONTRACT_TAG, "the tag appears more than once")),
    };
    let Some(tag) = words.get(pos + 1) else {
        return Err(invalid(CONTRACT_TAG, "expected `<kind>@<major>` after the tag"));
    };
    let Some((kind, major)) = tag.rsplit_once('@') else {
        return Err(invalid(tag, "expected `<kind>@<major>`, e.g. `payment.charge@1`"));
    };
    let segments: Vec<&str> = kind.split('.').collect();
    let segment_ok = |s: &&str| {
        s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if segments.len() < 2 || !segments.iter().all(segment_ok) {
        return Err(invalid(tag, "the kind must be two or more dot-separated segments of [a-z][a-z0-9-]*"));
    }
    let major_ok =
        !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()) && (major == "0" || !major.starts_with('0'));
    let major = major
        .parse::<u32>()
        .ok()
        .filter(|_| major_ok)
        .ok_or_else(|| invalid(tag, "the major version must be a decimal u32 without leading zeros"))?;
    Ok((kind.to_string(), major))
}

/// Byte offset of a whitespace-delimited `@contract` word in `line`.
fn tag_position(line: &str) -> Option<usize> {
    line.match_indices(CONTRACT_TAG).map(|(pos, _)| pos).find(|&pos| {
        let before_ok = line[..pos].chars().next_back().is_none_or(char::is_whitespace);
        let after_ok = line[pos + CONTRACT_TAG.len()..].chars().next().is_none_or(char::is_whitespace);
        before_ok && after_ok
    })
}

/// A world's doc comment with the `@contract <tag>` removed.
fn strip_contract_tag(docs: &str) -> String {
    let lines: Vec<String> = docs
        .lines()
        .filter_map(|line| match tag_position(line) {
            None => Some(line.trim_end().to_string()),
            Some(pos) => {
                let rest = line[pos + CONTRACT_TAG.len()..].trim_start();
                let after = rest.find(char::is_whitespace).map_or("", |i| rest[i..].trim());
                let before = line[..pos].trim_end();
                match (before.is_empty(), after.is_empty()) {
                    (true, true) => None,
                    (false, true) => Some(before.to_string()),
                    (true, false) => Some(after.to_string()),
                    (false, false) => Some(format!("{before} {after}")),
                }
            }
        })
        .collect();
    lines.join("\n").trim().to_string()
}

/// Whether `ty` is (an alias of) the shared type `name` from the `types` interface.
fn is_shared(resolve: &Resolve, shared: &Shared, ty: &Type, name: &str) -> bool {
    let mut current = *ty;
    for _ in 0..256 {
        let Type::Id(id) = current else { return false };
        let def = &resolve.types[id];
        if def.name.as_deref() == Some(name) && def.owner == TypeOwner::Interface(shared.interface) {
            return true;
        }
        match def.kind {
            TypeDefKind::Type(inner) => current = inner,
            _ => return false,
        }
    }
    false
}

fn build_contract(
    resolve: &Resolve,
    pkg: PackageId,
    world_id: WorldId,
    shared: &Shared,
) -> Result<ContractSpec, ContractError> {
    let world = &resolve.worlds[world_id];
    let world_name = world.name.clone();
    let docs = world.docs.contents.as_deref().unwrap_or("");
    let (kind, major_version) = contract_tag(&world_name, docs)?;
    let invalid_world = |reason: String| ContractError::InvalidWorld { world: world_name.clone(), reason };

    let mut exported = Vec::new();
    for (key, item) in &world.exports {
        match item {
            WorldItem::Interface { id, .. } => exported.push((*id, resolve.name_world_key(key))),
            WorldItem::Function(f) => {
                return Err(invalid_world(format!(
                    "it exports function `{}` directly; operations belong in an exported interface",
                    f.name
                )))
            }
            WorldItem::Type { .. } => {}
        }
    }
    let (iface_id, export_name) = match exported.as_slice() {
        [one] => one.clone(),
        [] => return Err(invalid_world("it exports no interface; it must export its operations interface".into())),
        _ => {
            let names: Vec<String> = exported.iter().map(|(_, n)| format!("`{n}`")).collect();
            return Err(invalid_world(format!(
                "it exports {} interfaces ({}); it must export exactly one",
                names.len(),
                names.join(", ")
            )));
        }
    };
    let interface = resolve.id_of(iface_id).ok_or_else(|| {
        invalid_world(format!(
            "it exports the inline interface `{export_name}`; export a named interface of the package"
        ))
    })?;
    let functions = &resolve.interfaces[iface_id].functions;
    if functions.is_empty() {
        return Err(invalid_world(format!("its exported interface `{interface}` declares no operation")));
    }

    let mut operations = Vec::new();
    let mut sensitive_fields = Vec::new();
    for function in functions.values() {
        let convention = |reason: String| ContractError::CallingConvention {
            world: world_name.clone(),
            function: function.name.clone(),
            reason,
        };
        let unsupported = |e: TypeError| ContractError::UnsupportedType {
            world: world_name.clone(),
            function: function.name.clone(),
            ty: e.ty,
            reason: e.reason,
        };
        let signature = format!(
            "expected `{0}: func(input: {0}-input, exchanges: list<egress-exchange>) -> {0}-step`",
            function.name
        );
        if function.kind != FunctionKind::Freestanding {
            return Err(convention(format!("it must be a plain synchronous function; {signature}")));
        }
        let (input_ty, exchanges_ty) = match function.params.as_slice() {
            [input, exchanges] if input.name == "input" && exchanges.name == "exchanges" => (input.ty, exchanges.ty),
            params => {
                let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
                return Err(convention(format!("it takes parameters ({}); {signature}", names.join(", "))));
            }
        };
        let exchanges_ok = match schema::dealias(resolve, &exchanges_ty) {
            Type::Id(id) => match &resolve.types[id].kind {
                TypeDefKind::List(elem) => is_shared(resolve, shared, elem, "egress-exchange"),
                _ => false,
            },
            _ => false,
        };
        if !exchanges_ok {
            return Err(convention(format!("`exchanges` must be `list<egress-exchange>`; {signature}")));
        }
        let input_is_record = matches!(schema::dealias(resolve, &input_ty),
            Type::Id(id) if matches!(resolve.types[id].kind, TypeDefKind::Record(_)));
        if !input_is_record {
            return Err(convention(format!(
                "`input` must be a record, found {}",
                schema::describe(resolve, &input_ty)
            )));
        }

        let step_name = format!("{}-step", function.name);
        let step = match function.result {
            Some(Type::Id(id)) if resolve.types[id].name.as_deref() == Some(step_name.as_str()) => {
                match &resolve.types[schema::dealias_id(resolve, id)].kind {
                    TypeDefKind::Variant(v) => v,
                    _ => return Err(convention(format!("`{step_name}` must be a variant; {signature}"))),
                }
            }
            _ => return Err(convention(format!("it must return the variant `{step_name}`; {signature}"))),
        };
        let mut done = None;
        let mut seen = Vec::new();
        for case in &step.cases {
            let ok = match (case.name.as_str(), &case.ty) {
                ("done", Some(t)) => {
                    done = Some(*t);
                    true
                }
                ("egress", Some(t)) => is_shared(resolve, shared, t, "plan-id"),
                ("failed", Some(t)) => is_shared(resolve, shared, t, "contract-error"),
                _ => false,
            };
            if !ok {
                return Err(convention(format!(
                    "`{step_name}` has case `{}`; expected exactly `done(<output>)`, `egress(plan-id)`, `failed(contract-error)`",
                    case.name
                )));
            }
            seen.push(case.name.as_str());
        }
        let Some(output_ty) = done.filter(|_| seen.len() == 3) else {
            return Err(convention(format!(
                "`{step_name}` has cases ({}); expected exactly `done(<output>)`, `egress(plan-id)`, `failed(contract-error)`",
                seen.join(", ")
            )));
        };

        let input = SchemaBuilder { resolve, direction: Direction::Input };
        let output = SchemaBuilder { resolve, direction: Direction::Output };
        operations.push(OperationSpec {
            name: function.name.clone(),
            description: function.docs.contents.as_deref().unwrap_or("").trim().to_string(),
            input_schema: input.root(&input_ty).map_err(unsupported)?,
            output_schema: output.root(&output_ty).map_err(unsupported)?,
            error_schema: output.root(&shared.contract_error).map_err(unsupported)?,
        });
        for (direction, ty) in [(Direction::Input, input_ty), (Direction::Output, output_ty)] {
            let mut pointers = Vec::new();
            schema::sensitive_pointers(resolve, &ty, "", &mut pointers);
            sensitive_fields.extend(pointers.into_iter().map(|pointer| SensitiveField {
                operation: function.name.clone(),
                direction,
                pointer,
            }));
        }
    }

    let package = resolve.packages[pkg].name.to_string();
    let contract = format!("{kind}@{major_version}");
    let wit_digest = digest(&package, &world_name, &interface, &operations, &sensitive_fields)
        .map_err(|message| ContractError::Digest { contract, message })?;
    Ok(ContractSpec {
        kind,
        major_version,
        package,
        world: world_name,
        interface,
        description: strip_contract_tag(docs),
        operations,
        sensitive_fields,
        wit_digest,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DigestInput<'a> {
    package: &'a str,
    world: &'a str,
    interface: &'a str,
    operations: &'a [OperationSpec],
    sensitive_fields: &'a [SensitiveField],
}

fn digest(
    package: &str,
    world: &str,
    interface: &str,
    operations: &[OperationSpec],
    sensitive_fields: &[SensitiveField],
) -> Result<[u8; 32], String> {
    let input = DigestInput { package, world, interface, operations, sensitive_fields };
    let bytes = serde_json_canonicalizer::to_vec(&input).map_err(|e| e.to_string())?;
    Ok(Sha256::digest(&bytes).into())
}

fn hex_digest<S: Serializer>(digest: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(digest))
}
