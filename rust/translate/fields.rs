//! A request's scalar fields, read with the type the client's own API gives them.
//!
//! A translated request is checked here, since the upstream sees only what the translator
//! writes: a wrongly typed `max_tokens` or `temperature` left out would be answered 200, with
//! the server's defaults, where the client's API answers 400. A field that is absent or null is
//! not given (`None`).

use serde_json::{Map, Value};

/// `key`'s value read by `read`, or the error saying what was `expected`.
fn read<T>(
    req: &Map<String, Value>,
    key: &str,
    read: impl FnOnce(&Value) -> Option<T>,
    expected: impl FnOnce() -> String,
) -> Result<Option<T>, String> {
    match req.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => read(v)
            .map(Some)
            .ok_or_else(|| format!("{key}: expected {}", expected())),
    }
}

/// An integer of at least `min`.
pub fn int_at_least(req: &Map<String, Value>, key: &str, min: u64) -> Result<Option<u64>, String> {
    read(
        req,
        key,
        |v| v.as_u64().filter(|&n| n >= min),
        || format!("an integer of at least {min}"),
    )
}

/// A number in `lo..=hi`.
pub fn number_in(
    req: &Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, String> {
    read(
        req,
        key,
        |v| v.as_f64().filter(|x| (lo..=hi).contains(x)),
        || format!("a number from {lo} to {hi}"),
    )
}

pub fn boolean(req: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    read(req, key, Value::as_bool, || "true or false".into())
}

/// An array of strings (or, where `one_string` allows it, a single string).
pub fn strings(
    req: &Map<String, Value>,
    key: &str,
    one_string: bool,
) -> Result<Vec<Value>, String> {
    let strings = |v: &Value| match v {
        Value::String(s) if one_string => Some(vec![Value::String(s.clone())]),
        Value::Array(items) if items.iter().all(Value::is_string) => Some(items.clone()),
        _ => None,
    };
    let expected = || {
        if one_string {
            "a string or an array of strings".to_owned()
        } else {
            "an array of strings".to_owned()
        }
    };
    Ok(read(req, key, strings, expected)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn absent_and_null_are_not_given() {
        let r = req(json!({"n": null}));
        assert_eq!(int_at_least(&r, "n", 1), Ok(None));
        assert_eq!(int_at_least(&r, "other", 1), Ok(None));
        assert_eq!(number_in(&r, "n", 0.0, 1.0), Ok(None));
        assert_eq!(boolean(&r, "n"), Ok(None));
        assert_eq!(strings(&r, "n", true), Ok(vec![]));
    }

    #[test]
    fn each_type_is_held_to_its_own() {
        let r = req(json!({
            "i": 3, "zero": 0, "neg": -1, "float": 2.5, "text": "3", "list": [],
            "t": 0.5, "big": 1.5, "b": true, "s": "x", "ss": ["a", "b"], "mixed": ["a", 1]
        }));
        assert_eq!(int_at_least(&r, "i", 1), Ok(Some(3)));
        assert_eq!(int_at_least(&r, "zero", 0), Ok(Some(0)));
        for key in ["zero", "neg", "float", "text", "list"] {
            assert_eq!(
                int_at_least(&r, key, 1),
                Err(format!("{key}: expected an integer of at least 1"))
            );
        }
        assert_eq!(number_in(&r, "t", 0.0, 1.0), Ok(Some(0.5)));
        assert_eq!(number_in(&r, "i", 0.0, 5.0), Ok(Some(3.0)));
        for key in ["big", "neg", "text", "b"] {
            assert!(number_in(&r, key, 0.0, 1.0).is_err(), "{key}");
        }
        assert_eq!(boolean(&r, "b"), Ok(Some(true)));
        assert_eq!(boolean(&r, "s"), Err("s: expected true or false".into()));
        assert_eq!(strings(&r, "s", true), Ok(vec![json!("x")]));
        assert_eq!(strings(&r, "ss", false), Ok(vec![json!("a"), json!("b")]));
        assert!(strings(&r, "s", false).is_err());
        assert_eq!(
            strings(&r, "mixed", true),
            Err("mixed: expected a string or an array of strings".into())
        );
    }
}
