//! Helpers shared by the fuzz targets in `fuzz_targets/`: the JSON equalities their properties are
//! stated in.
//!
//! The targets assert round trips ("encode then decode gives the value back"), and what "the same
//! value" means differs by layer: RFC 8785 models every number as an IEEE 754 double, so the
//! canonical encoder may turn `9007199254740993` into `9007199254740992` or `1.0` into `1`; the
//! JSON ↔ WIT bridge keeps integers exact but writes an absent `option` field back as `null`.
//! [`same_json`] states both precisely, so a target fails on a real difference and only on one.

use serde_json::Value;

/// How two JSON numbers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbers {
    /// Integers compare exactly; a number written with a fraction or exponent compares as a double
    /// with any other number (so `3` and `3.0` are equal, `2^53 + 1` and `2^53` are not).
    Exact,
    /// Every number compares as the IEEE 754 double it denotes (RFC 8785 / I-JSON semantics).
    AsDoubles,
}

/// What [`same_json`] treats as equal beyond plain `==`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Equality {
    pub numbers: Numbers,
    /// An object member whose value is `null` equals an absent member.
    pub absent_is_null: bool,
}

/// `a` and `b` denote the same JSON value under `eq`.
pub fn same_json(a: &Value, b: &Value, eq: Equality) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match eq.numbers {
            Numbers::Exact if !x.is_f64() && !y.is_f64() => x == y,
            // Both sides are finite: serde_json has no NaN or infinity.
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q, eq)),
        (Value::Object(x), Value::Object(y)) => {
            if eq.absent_is_null {
                x.keys()
                    .chain(y.keys())
                    .all(|k| same_json(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), eq))
            } else {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w, eq)))
            }
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXACT: Equality = Equality { numbers: Numbers::Exact, absent_is_null: false };
    const DOUBLES: Equality = Equality { numbers: Numbers::AsDoubles, absent_is_null: false };
    const LENIENT: Equality = Equality { numbers: Numbers::Exact, absent_is_null: true };

    #[test]
    fn integers_are_exact_unless_compared_as_doubles() {
        let (a, b) = (json!([9007199254740993u64]), json!([9007199254740992u64]));
        assert!(!same_json(&a, &b, EXACT));
        assert!(same_json(&a, &b, DOUBLES));
        assert!(same_json(&json!(3), &json!(3.0), EXACT));
        assert!(same_json(&json!(-0.0), &json!(0), DOUBLES));
        assert!(!same_json(&json!(1.5), &json!(1), DOUBLES));
    }

    #[test]
    fn absent_members_equal_null_only_when_asked() {
        let (a, b) = (json!({"x": 1, "y": null}), json!({"x": 1}));
        assert!(!same_json(&a, &b, EXACT));
        assert!(same_json(&a, &b, LENIENT));
        assert!(same_json(&b, &a, LENIENT));
        assert!(!same_json(&json!({"x": 1, "y": 0}), &b, LENIENT));
        assert!(!same_json(&json!({"x": 2}), &b, LENIENT));
    }

    #[test]
    fn shapes_must_match() {
        assert!(!same_json(&json!([1, 2]), &json!([1]), LENIENT));
        assert!(!same_json(&json!("1"), &json!(1), LENIENT));
        assert!(!same_json(&json!({}), &json!([]), LENIENT));
        assert!(same_json(&json!({"a": [{"b": "c"}]}), &json!({"a": [{"b": "c"}]}), EXACT));
    }
}
