//! JSON Schema (draft 2020-12) derivation from resolved WIT types.
//!
//! The conventions implemented here are documented in the parent module; the
//! JSON <-> WIT bridge must follow exactly the same rules.

use serde_json::{json, Map, Value};
use wit_parser::{Docs, Handle, Resolve, Type, TypeDefKind, TypeId};

use super::Direction;

/// Doc-comment tag marking a record field as sensitive.
pub(crate) const SENSITIVE_TAG: &str = "@sensitive";

/// JSON Schema dialect announced at the root of every derived schema.
pub(crate) const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Why a WIT type has no JSON form (yet); wrapped into `ContractError::UnsupportedType` by the caller.
#[derive(Debug)]
pub(crate) struct TypeError {
    pub ty: String,
    pub reason: String,
}

/// Converts a WIT kebab-case name to the lowerCamelCase JSON property name
/// (`idempotency-key` -> `idempotencyKey`). The first word is lowercased; later words get an
/// uppercase first letter and keep the rest as written (`URL-path` -> `urlPath`, `get-URL` -> `getURL`).
pub fn json_field_name(wit_name: &str) -> String {
    let mut out = String::with_capacity(wit_name.len());
    for (i, word) in wit_name.split('-').filter(|w| !w.is_empty()).enumerate() {
        if i == 0 {
            out.push_str(&word.to_lowercase());
        } else {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        }
    }
    out
}

/// Whether a doc comment carries the `@sensitive` tag.
pub(crate) fn is_sensitive(docs: &Docs) -> bool {
    docs.contents
        .as_deref()
        .is_some_and(|d| d.split_whitespace().any(|w| w.trim_end_matches(['.', ',', ';']) == SENSITIVE_TAG))
}

/// Doc comment text with the `@sensitive` tag removed; `None` when nothing is left.
pub(crate) fn description(docs: &Docs) -> Option<String> {
    let text = docs.contents.as_deref()?;
    let cleaned: Vec<String> = text
        .lines()
        .map(|line| {
            if line.contains(SENSITIVE_TAG) {
                line.replace(SENSITIVE_TAG, "").split_whitespace().collect::<Vec<_>>().join(" ")
            } else {
                line.trim_end().to_string()
            }
        })
        .collect();
    let joined = cleaned.join("\n");
    let trimmed = joined.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Escapes one JSON Pointer reference token (RFC 6901).
fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Human-readable name of a type for error messages.
pub(crate) fn describe(resolve: &Resolve, ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "s8".into(),
        Type::S16 => "s16".into(),
        Type::S32 => "s32".into(),
        Type::S64 => "s64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Id(id) => {
            let def = &resolve.types[*id];
            match (&def.name, &def.kind) {
                (Some(name), kind) => format!("`{name}` ({})", kind.as_str()),
                (None, TypeDefKind::Handle(Handle::Own(r))) => format!("`own<{}>`", describe_name(resolve, *r)),
                (None, TypeDefKind::Handle(Handle::Borrow(r))) => format!("`borrow<{}>`", describe_name(resolve, *r)),
                (None, kind) => format!("anonymous {}", kind.as_str()),
            }
        }
    }
}

fn describe_name(resolve: &Resolve, id: TypeId) -> &str {
    resolve.types[id].name.as_deref().unwrap_or("?")
}

/// Follows type aliases (`type a = b`, `use`) down to the underlying type.
pub(crate) fn dealias(resolve: &Resolve, ty: &Type) -> Type {
    let mut current = *ty;
    // WIT type graphs are acyclic; the bound only guards against malformed input.
    for _ in 0..256 {
        match current {
            Type::Id(id) => match &resolve.types[id].kind {
                TypeDefKind::Type(inner) => current = *inner,
                _ => return current,
            },
            _ => return current,
        }
    }
    current
}

/// Follows aliases from the type definition `id` to the underlying definition.
pub(crate) fn dealias_id(resolve: &Resolve, id: TypeId) -> TypeId {
    match dealias(resolve, &Type::Id(id)) {
        Type::Id(inner) => inner,
        _ => id,
    }
}

fn is_option(resolve: &Resolve, ty: &Type) -> bool {
    matches!(dealias(resolve, ty), Type::Id(id) if matches!(resolve.types[id].kind, TypeDefKind::Option(_)))
}

fn integer(min: i128, max: i128) -> Value {
    // All bounds fit either i64 or u64.
    let num = |v: i128| -> Value {
        if let Ok(v) = i64::try_from(v) {
            Value::from(v)
        } else if let Ok(v) = u64::try_from(v) {
            Value::from(v)
        } else {
            Value::Null
        }
    };
    json!({"type": "integer", "minimum": num(min), "maximum": num(max)})
}

fn object_with_one(name: &str, schema: Value) -> Value {
    json!({
        "type": "object",
        "properties": { name: schema },
        "required": [name],
        "additionalProperties": false,
    })
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn set_description(schema: &mut Value, docs: &Docs) {
    if let (Some(text), Value::Object(obj)) = (description(docs), schema) {
        obj.insert("description".into(), Value::String(text));
    }
}

/// Derives schemas for one direction (input or output) of a contract.
pub(crate) struct SchemaBuilder<'a> {
    pub resolve: &'a Resolve,
    pub direction: Direction,
}

impl SchemaBuilder<'_> {
    /// Root schema of `ty`, with the `$schema` dialect.
    pub fn root(&self, ty: &Type) -> Result<Value, TypeError> {
        let mut schema = self.schema(ty)?;
        if let Value::Object(obj) = &mut schema {
            let mut rooted = Map::new();
            rooted.insert("$schema".into(), Value::String(DIALECT.into()));
            rooted.extend(std::mem::take(obj));
            *obj = rooted;
        }
        Ok(schema)
    }

    fn unsupported(&self, ty: &Type, reason: &str) -> TypeError {
        TypeError { ty: describe(self.resolve, ty), reason: reason.to_string() }
    }

    /// Schema of `ty`, with descriptions from doc comments.
    pub fn schema(&self, ty: &Type) -> Result<Value, TypeError> {
        Ok(match ty {
            Type::Bool => json!({"type": "boolean"}),
            Type::String => json!({"type": "string"}),
            Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
            Type::U8 => integer(0, u8::MAX.into()),
            Type::U16 => integer(0, u16::MAX.into()),
            Type::U32 => integer(0, u32::MAX.into()),
            Type::U64 => integer(0, u64::MAX.into()),
            Type::S8 => integer(i8::MIN.into(), i8::MAX.into()),
            Type::S16 => integer(i16::MIN.into(), i16::MAX.into()),
            Type::S32 => integer(i32::MIN.into(), i32::MAX.into()),
            Type::S64 => integer(i64::MIN.into(), i64::MAX.into()),
            Type::F32 | Type::F64 => json!({"type": "number"}),
            Type::ErrorContext => return Err(self.unsupported(ty, "error-context values have no JSON form")),
            Type::Id(id) => {
                let def = &self.resolve.types[*id];
                let mut schema = self.kind_schema(ty, &def.kind)?;
                set_description(&mut schema, &def.docs);
                schema
            }
        })
    }

    fn kind_schema(&self, ty: &Type, kind: &TypeDefKind) -> Result<Value, TypeError> {
        Ok(match kind {
            TypeDefKind::Type(inner) => self.schema(inner)?,
            TypeDefKind::Record(record) => {
                let mut properties = Map::new();
                let mut required = Vec::new();
                for field in &record.fields {
                    let name = json_field_name(&field.name);
                    if properties.contains_key(&name) {
                        return Err(
                            self.unsupported(ty, &format!("two fields map to the same JSON property name `{name}`"))
                        );
                    }
                    let mut prop = self.schema(&field.ty)?;
                    set_description(&mut prop, &field.docs);
                    if is_sensitive(&field.docs) {
                        if let Value::Object(obj) = &mut prop {
                            obj.insert("x-vadyl-sensitive".into(), Value::Bool(true));
                            if self.direction == Direction::Input {
                                obj.insert("writeOnly".into(), Value::Bool(true));
                            }
                        }
                    }
                    if !is_option(self.resolve, &field.ty) {
                        required.push(Value::String(name.clone()));
                    }
                    properties.insert(name, prop);
                }
                json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                })
            }
            TypeDefKind::Enum(e) => {
                let cases: Vec<Value> = e.cases.iter().map(|c| Value::String(c.name.clone())).collect();
                json!({"type": "string", "enum": cases})
            }
            TypeDefKind::Flags(f) => {
                let names: Vec<Value> = f.flags.iter().map(|c| Value::String(c.name.clone())).collect();
                json!({"type": "array", "items": {"type": "string", "enum": names}, "uniqueItems": true})
            }
            TypeDefKind::Variant(v) => {
                let mut branches = Vec::with_capacity(v.cases.len());
                for case in &v.cases {
                    let mut branch = match &case.ty {
                        None => json!({"const": case.name}),
                        Some(payload) => object_with_one(&case.name, self.schema(payload)?),
                    };
                    set_description(&mut branch, &case.docs);
                    branches.push(branch);
                }
                json!({"oneOf": branches})
            }
            TypeDefKind::Option(inner) => {
                if is_option(self.resolve, inner) {
                    return Err(self.unsupported(ty, "option<option<T>> has no unambiguous JSON form"));
                }
                nullable(self.schema(inner)?)
            }
            TypeDefKind::Result(r) => {
                let branch = |name: &str, payload: &Option<Type>| -> Result<Value, TypeError> {
                    Ok(match payload {
                        None => json!({"const": name}),
                        Some(t) => object_with_one(name, self.schema(t)?),
                    })
                };
                json!({"oneOf": [branch("ok", &r.ok)?, branch("err", &r.err)?]})
            }
            TypeDefKind::List(inner) => json!({"type": "array", "items": self.schema(inner)?}),
            TypeDefKind::FixedLengthList(inner, n) => {
                json!({"type": "array", "items": self.schema(inner)?, "minItems": n, "maxItems": n})
            }
            TypeDefKind::Tuple(t) => {
                let items = t.types.iter().map(|t| self.schema(t)).collect::<Result<Vec<_>, _>>()?;
                let n = items.len();
                json!({"type": "array", "prefixItems": items, "minItems": n, "maxItems": n})
            }
            TypeDefKind::Map(k, v) => {
                let pair = json!({
                    "type": "array",
                    "prefixItems": [self.schema(k)?, self.schema(v)?],
                    "minItems": 2,
                    "maxItems": 2,
                });
                json!({"type": "array", "items": pair})
            }
            TypeDefKind::Resource | TypeDefKind::Handle(_) => {
                return Err(self.unsupported(ty, "resources and handles cannot cross the contract boundary"))
            }
            TypeDefKind::Future(_) => return Err(self.unsupported(ty, "futures are not supported in contracts")),
            TypeDefKind::Stream(_) => return Err(self.unsupported(ty, "streams are not supported in contracts")),
            TypeDefKind::Unknown => return Err(self.unsupported(ty, "the type is unresolved")),
        })
    }
}

/// Collects JSON Pointers (relative to a value of type `ty`) of every record field
/// tagged `@sensitive`, in declaration order. Array elements are addressed with the
/// reference token `*` (every element); variant and result payloads with the case name.
pub(crate) fn sensitive_pointers(resolve: &Resolve, ty: &Type, pointer: &str, out: &mut Vec<String>) {
    let Type::Id(id) = ty else { return };
    match &resolve.types[*id].kind {
        TypeDefKind::Type(inner) | TypeDefKind::Option(inner) => sensitive_pointers(resolve, inner, pointer, out),
        TypeDefKind::Record(record) => {
            for field in &record.fields {
                let p = format!("{pointer}/{}", pointer_token(&json_field_name(&field.name)));
                if is_sensitive(&field.docs) {
                    out.push(p.clone());
                }
                sensitive_pointers(resolve, &field.ty, &p, out);
            }
        }
        TypeDefKind::List(inner) | TypeDefKind::FixedLengthList(inner, _) => {
            sensitive_pointers(resolve, inner, &format!("{pointer}/*"), out)
        }
        TypeDefKind::Tuple(t) => {
            for (i, inner) in t.types.iter().enumerate() {
                sensitive_pointers(resolve, inner, &format!("{pointer}/{i}"), out);
            }
        }
        TypeDefKind::Variant(v) => {
            for case in &v.cases {
                if let Some(inner) = &case.ty {
                    sensitive_pointers(resolve, inner, &format!("{pointer}/{}", pointer_token(&case.name)), out);
                }
            }
        }
        TypeDefKind::Result(r) => {
            if let Some(ok) = &r.ok {
                sensitive_pointers(resolve, ok, &format!("{pointer}/ok"), out);
            }
            if let Some(err) = &r.err {
                sensitive_pointers(resolve, err, &format!("{pointer}/err"), out);
            }
        }
        TypeDefKind::Map(k, v) => {
            sensitive_pointers(resolve, k, &format!("{pointer}/*/0"), out);
            sensitive_pointers(resolve, v, &format!("{pointer}/*/1"), out);
        }
        TypeDefKind::Enum(_)
        | TypeDefKind::Flags(_)
        | TypeDefKind::Resource
        | TypeDefKind::Handle(_)
        | TypeDefKind::Future(_)
        | TypeDefKind::Stream(_)
        | TypeDefKind::Unknown => {}
    }
}
