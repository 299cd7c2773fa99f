//! The JSON ↔ WIT value bridge, driven by the contract's WIT types.
//!
//! `POST /invoke` takes JSON for any contract. Before a guest runs, the JSON is converted into
//! component-model values by walking the operation's WIT type (from `wit-parser`, the same
//! resolution the JSON Schemas are derived from), so every mismatch is reported with its JSON
//! Pointer instead of surfacing as a trap. The JSON shape is the one `contracts` derives schemas
//! for: records are objects with lowerCamelCase keys, `option` is `null` or an absent field, enums
//! are their case name, variants and results are `"case"` or `{"case": payload}`, lists and
//! tuples are arrays, flags an array of names.

use serde_json::{Map, Value};
use wasmtime::component::Val;
use wit_parser::{Resolve, Type, TypeDefKind};

use crate::contracts::json_field_name;
use crate::ids::JsonPointer;

/// A value that does not fit its WIT type, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct BridgeError {
    /// JSON Pointer of the offending value; the root value itself is reported as `/`.
    pub pointer: String,
    pub message: String,
}

fn err(pointer: &str, message: impl Into<String>) -> BridgeError {
    BridgeError { pointer: if pointer.is_empty() { "/".into() } else { pointer.to_owned() }, message: message.into() }
}

fn child(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", JsonPointer::escape_token(token))
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Converts `json` into a value of WIT type `ty`.
pub fn to_val(resolve: &Resolve, ty: &Type, json: &Value) -> Result<Val, BridgeError> {
    to_val_at(resolve, ty, json, "")
}

fn int<T: TryFrom<i128>>(json: &Value, pointer: &str, name: &str) -> Result<T, BridgeError> {
    let n = match json {
        Value::Number(n) => n.as_i128(),
        _ => None,
    };
    n.and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| err(pointer, format!("expected an integer in the range of {name}, found {json}")))
}

fn to_val_at(resolve: &Resolve, ty: &Type, json: &Value, p: &str) -> Result<Val, BridgeError> {
    Ok(match ty {
        Type::Bool => {
            Val::Bool(json.as_bool().ok_or_else(|| err(p, format!("expected a boolean, found {}", describe(json))))?)
        }
        Type::U8 => Val::U8(int(json, p, "u8")?),
        Type::U16 => Val::U16(int(json, p, "u16")?),
        Type::U32 => Val::U32(int(json, p, "u32")?),
        Type::U64 => Val::U64(int(json, p, "u64")?),
        Type::S8 => Val::S8(int(json, p, "s8")?),
        Type::S16 => Val::S16(int(json, p, "s16")?),
        Type::S32 => Val::S32(int(json, p, "s32")?),
        Type::S64 => Val::S64(int(json, p, "s64")?),
        // Narrowing to f32 is the WIT type's precision, not a loss the caller can avoid.
        #[allow(clippy::cast_possible_truncation)]
        Type::F32 => Val::Float32(json.as_f64().ok_or_else(|| err(p, "expected a number"))? as f32),
        Type::F64 => Val::Float64(json.as_f64().ok_or_else(|| err(p, "expected a number"))?),
        Type::Char => {
            let s = json.as_str().ok_or_else(|| err(p, "expected a one-character string"))?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(err(p, "expected exactly one character")),
            }
        }
        Type::String => Val::String(
            json.as_str().ok_or_else(|| err(p, format!("expected a string, found {}", describe(json))))?.to_owned(),
        ),
        Type::ErrorContext => return Err(err(p, "error-context values have no JSON form")),
        Type::Id(id) => {
            let def = &resolve.types[*id];
            match &def.kind {
                TypeDefKind::Type(inner) => to_val_at(resolve, inner, json, p)?,
                TypeDefKind::Record(record) => {
                    let obj = json
                        .as_object()
                        .ok_or_else(|| err(p, format!("expected an object, found {}", describe(json))))?;
                    let mut fields = Vec::with_capacity(record.fields.len());
                    for field in &record.fields {
                        let key = json_field_name(&field.name);
                        let value = obj.get(&key).unwrap_or(&Value::Null);
                        fields.push((field.name.clone(), to_val_at(resolve, &field.ty, value, &child(p, &key))?));
                    }
                    if let Some(unknown) =
                        obj.keys().find(|k| !record.fields.iter().any(|f| json_field_name(&f.name) == **k))
                    {
                        return Err(err(&child(p, unknown), "unknown field"));
                    }
                    Val::Record(fields)
                }
                TypeDefKind::Option(inner) => match json {
                    Value::Null => Val::Option(None),
                    v => Val::Option(Some(Box::new(to_val_at(resolve, inner, v, p)?))),
                },
                TypeDefKind::Enum(e) => {
                    let s = json.as_str().ok_or_else(|| err(p, "expected an enum case name"))?;
                    if !e.cases.iter().any(|c| c.name == s) {
                        let names: Vec<&str> = e.cases.iter().map(|c| c.name.as_str()).collect();
                        return Err(err(p, format!("{s:?} is not one of {}", names.join(", "))));
                    }
                    Val::Enum(s.to_owned())
                }
                TypeDefKind::Flags(f) => {
                    let items = json.as_array().ok_or_else(|| err(p, "expected an array of flag names"))?;
                    let mut names = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let name = item
                            .as_str()
                            .filter(|n| f.flags.iter().any(|flag| flag.name == *n))
                            .ok_or_else(|| err(&child(p, &i.to_string()), "not a flag of this type"))?;
                        names.push(name.to_owned());
                    }
                    Val::Flags(names)
                }
                TypeDefKind::Variant(v) => {
                    let (case, payload) = case_of(json, p)?;
                    let spec = v
                        .cases
                        .iter()
                        .find(|c| c.name == case)
                        .ok_or_else(|| err(p, format!("{case:?} is not a case of this variant")))?;
                    let payload = payload_val(resolve, spec.ty.as_ref(), payload, &child(p, case))?;
                    Val::Variant(case.to_owned(), payload)
                }
                TypeDefKind::Result(r) => {
                    let (case, payload) = case_of(json, p)?;
                    match case {
                        "ok" => Val::Result(Ok(payload_val(resolve, r.ok.as_ref(), payload, &child(p, "ok"))?)),
                        "err" => Val::Result(Err(payload_val(resolve, r.err.as_ref(), payload, &child(p, "err"))?)),
                        other => return Err(err(p, format!("a result is \"ok\" or \"err\", not {other:?}"))),
                    }
                }
                TypeDefKind::List(inner) => {
                    let items = json
                        .as_array()
                        .ok_or_else(|| err(p, format!("expected an array, found {}", describe(json))))?;
                    Val::List(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| to_val_at(resolve, inner, v, &child(p, &i.to_string())))
                            .collect::<Result<_, _>>()?,
                    )
                }
                TypeDefKind::FixedLengthList(inner, n) => {
                    let items = json.as_array().filter(|a| a.len() == *n as usize).ok_or_else(|| {
                        err(p, format!("expected an array of exactly {n} items, found {}", describe(json)))
                    })?;
                    Val::FixedLengthList(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| to_val_at(resolve, inner, v, &child(p, &i.to_string())))
                            .collect::<Result<_, _>>()?,
                    )
                }
                TypeDefKind::Tuple(t) => {
                    let items = json
                        .as_array()
                        .filter(|a| a.len() == t.types.len())
                        .ok_or_else(|| err(p, format!("expected an array of exactly {} items", t.types.len())))?;
                    Val::Tuple(
                        t.types
                            .iter()
                            .zip(items)
                            .enumerate()
                            .map(|(i, (ty, v))| to_val_at(resolve, ty, v, &child(p, &i.to_string())))
                            .collect::<Result<_, _>>()?,
                    )
                }
                TypeDefKind::Map(k, v) => {
                    let items = json.as_array().ok_or_else(|| err(p, "expected an array of [key, value] pairs"))?;
                    let mut pairs = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let at = child(p, &i.to_string());
                        let pair = item
                            .as_array()
                            .filter(|a| a.len() == 2)
                            .ok_or_else(|| err(&at, "expected [key, value]"))?;
                        pairs.push((
                            to_val_at(resolve, k, &pair[0], &child(&at, "0"))?,
                            to_val_at(resolve, v, &pair[1], &child(&at, "1"))?,
                        ));
                    }
                    Val::Map(pairs)
                }
                TypeDefKind::Resource
                | TypeDefKind::Handle(_)
                | TypeDefKind::Future(_)
                | TypeDefKind::Stream(_)
                | TypeDefKind::Unknown => return Err(err(p, "this WIT type cannot cross the contract boundary")),
            }
        }
    })
}

/// `"case"` or `{"case": payload}`.
fn case_of<'a>(json: &'a Value, p: &str) -> Result<(&'a str, Option<&'a Value>), BridgeError> {
    match json {
        Value::String(s) => Ok((s.as_str(), None)),
        Value::Object(obj) if obj.len() == 1 => {
            let (k, v) = obj.iter().next().ok_or_else(|| err(p, "empty object"))?;
            Ok((k.as_str(), Some(v)))
        }
        other => Err(err(p, format!("expected \"case\" or {{\"case\": payload}}, found {}", describe(other)))),
    }
}

fn payload_val(
    resolve: &Resolve,
    ty: Option<&Type>,
    payload: Option<&Value>,
    p: &str,
) -> Result<Option<Box<Val>>, BridgeError> {
    match (ty, payload) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(err(p, "this case carries no payload")),
        (Some(_), None) => Err(err(p, "this case needs a payload: {\"case\": payload}")),
        (Some(ty), Some(v)) => Ok(Some(Box::new(to_val_at(resolve, ty, v, p)?))),
    }
}

/// Converts a value the guest returned into JSON, checking it against `ty` on the way: a guest that
/// answers outside its contract is reported, never passed on.
pub fn to_json(resolve: &Resolve, ty: &Type, val: &Val) -> Result<Value, BridgeError> {
    to_json_at(resolve, ty, val, "")
}

fn mismatch(p: &str, ty: &str, val: &Val) -> BridgeError {
    err(p, format!("the guest returned {val:?} where the contract has {ty}"))
}

fn to_json_at(resolve: &Resolve, ty: &Type, val: &Val, p: &str) -> Result<Value, BridgeError> {
    Ok(match (ty, val) {
        (Type::Bool, Val::Bool(b)) => Value::Bool(*b),
        (Type::U8, Val::U8(n)) => Value::from(*n),
        (Type::U16, Val::U16(n)) => Value::from(*n),
        (Type::U32, Val::U32(n)) => Value::from(*n),
        (Type::U64, Val::U64(n)) => Value::from(*n),
        (Type::S8, Val::S8(n)) => Value::from(*n),
        (Type::S16, Val::S16(n)) => Value::from(*n),
        (Type::S32, Val::S32(n)) => Value::from(*n),
        (Type::S64, Val::S64(n)) => Value::from(*n),
        (Type::F32, Val::Float32(f)) => serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        (Type::F64, Val::Float64(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        (Type::Char, Val::Char(c)) => Value::String(c.to_string()),
        (Type::String, Val::String(s)) => Value::String(s.clone()),
        (Type::Id(id), _) => {
            let def = &resolve.types[*id];
            match (&def.kind, val) {
                (TypeDefKind::Type(inner), v) => to_json_at(resolve, inner, v, p)?,
                (TypeDefKind::Record(record), Val::Record(fields)) if fields.len() == record.fields.len() => {
                    let mut obj = Map::new();
                    for (spec, (name, v)) in record.fields.iter().zip(fields) {
                        if spec.name != *name {
                            return Err(mismatch(p, &format!("field {}", spec.name), val));
                        }
                        let key = json_field_name(name);
                        let at = child(p, &key);
                        obj.insert(key, to_json_at(resolve, &spec.ty, v, &at)?);
                    }
                    Value::Object(obj)
                }
                (TypeDefKind::Option(_), Val::Option(None)) => Value::Null,
                (TypeDefKind::Option(inner), Val::Option(Some(v))) => to_json_at(resolve, inner, v, p)?,
                (TypeDefKind::Enum(e), Val::Enum(s)) if e.cases.iter().any(|c| c.name == *s) => {
                    Value::String(s.clone())
                }
                (TypeDefKind::Flags(_), Val::Flags(names)) => {
                    Value::Array(names.iter().map(|n| Value::String(n.clone())).collect())
                }
                (TypeDefKind::Variant(v), Val::Variant(case, payload)) => {
                    let spec = v.cases.iter().find(|c| c.name == *case).ok_or_else(|| mismatch(p, "a variant", val))?;
                    case_json(resolve, case, spec.ty.as_ref(), payload.as_deref(), p)?
                }
                (TypeDefKind::Result(r), Val::Result(Ok(payload))) => {
                    case_json(resolve, "ok", r.ok.as_ref(), payload.as_deref(), p)?
                }
                (TypeDefKind::Result(r), Val::Result(Err(payload))) => {
                    case_json(resolve, "err", r.err.as_ref(), payload.as_deref(), p)?
                }
                (TypeDefKind::List(inner), Val::List(items))
                | (TypeDefKind::FixedLengthList(inner, _), Val::FixedLengthList(items)) => Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| to_json_at(resolve, inner, v, &child(p, &i.to_string())))
                        .collect::<Result<_, _>>()?,
                ),
                (TypeDefKind::Tuple(t), Val::Tuple(items)) if items.len() == t.types.len() => Value::Array(
                    t.types
                        .iter()
                        .zip(items)
                        .enumerate()
                        .map(|(i, (ty, v))| to_json_at(resolve, ty, v, &child(p, &i.to_string())))
                        .collect::<Result<_, _>>()?,
                ),
                (TypeDefKind::Map(k, v), Val::Map(pairs)) => Value::Array(
                    pairs
                        .iter()
                        .map(|(a, b)| {
                            Ok(Value::Array(vec![to_json_at(resolve, k, a, p)?, to_json_at(resolve, v, b, p)?]))
                        })
                        .collect::<Result<_, BridgeError>>()?,
                ),
                _ => return Err(mismatch(p, "another type", val)),
            }
        }
        _ => return Err(mismatch(p, &format!("{ty:?}"), val)),
    })
}

fn case_json(
    resolve: &Resolve,
    case: &str,
    ty: Option<&Type>,
    payload: Option<&Val>,
    p: &str,
) -> Result<Value, BridgeError> {
    Ok(match (ty, payload) {
        (None, None) => Value::String(case.to_owned()),
        (Some(ty), Some(v)) => {
            let mut obj = Map::new();
            obj.insert(case.to_owned(), to_json_at(resolve, ty, v, &child(p, case))?);
            Value::Object(obj)
        }
        _ => return Err(err(p, format!("case {case:?} has the wrong payload"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn charge_input(resolve: &Resolve) -> Type {
        let iface = resolve
            .interfaces
            .iter()
            .find(|(_, i)| i.name.as_deref() == Some("payment-charge-v1-api"))
            .map(|(id, _)| id)
            .unwrap();
        Type::Id(resolve.interfaces[iface].types["charge-input"])
    }

    #[test]
    fn contract_json_round_trips_through_wit_values() {
        let (resolve, _) = crate::contracts::embedded_resolve().unwrap();
        let ty = charge_input(&resolve);
        let input = json!({"amount": 2000, "currency": "usd", "source": "tok_visa", "description": null,
            "customer": "cus_1", "capture": true, "metadata": [["order", "1"]], "idempotencyKey": "k1"});
        let val = to_val(&resolve, &ty, &input).unwrap();
        let Val::Record(fields) = &val else { panic!("not a record") };
        assert_eq!(fields[0], ("amount".to_owned(), Val::U64(2000)));
        assert_eq!(fields[7].0, "idempotency-key");
        assert_eq!(to_json(&resolve, &ty, &val).unwrap(), input);
    }

    #[test]
    fn mismatches_name_the_pointer() {
        let (resolve, _) = crate::contracts::embedded_resolve().unwrap();
        let ty = charge_input(&resolve);
        let bad = json!({"amount": -1, "currency": "usd", "source": "s", "metadata": []});
        assert_eq!(to_val(&resolve, &ty, &bad).unwrap_err().pointer, "/amount");
        let bad = json!({"amount": 1, "currency": "usd", "source": "s", "metadata": [["a"]]});
        assert_eq!(to_val(&resolve, &ty, &bad).unwrap_err().pointer, "/metadata/0");
        let bad = json!({"amount": 1, "currency": "usd", "source": "s", "metadata": [], "sauce": 1});
        let e = to_val(&resolve, &ty, &bad).unwrap_err();
        assert_eq!((e.pointer.as_str(), e.message.as_str()), ("/sauce", "unknown field"));
        let bad = json!({"amount": 1, "currency": 7, "source": "s", "metadata": []});
        assert_eq!(to_val(&resolve, &ty, &bad).unwrap_err().pointer, "/currency");
        // A guest value of the wrong shape is refused on the way back.
        assert!(to_json(&resolve, &ty, &Val::String("x".into())).is_err());
    }
}
