//! Stored records read from a parsed JSON object field by field, instead of by serde's derived
//! readers. A derived reader compiles the parsing of every field inline, once per record type
//! (about 300 to 800 bytes of wasm a field); here each field costs a call to a few shared
//! readers. The rules are the derived readers': a field with a default may be missing, an
//! `Option` may be missing or null, any other missing field and any value of the wrong type is
//! an error, unknown fields are ignored.

use std::cell::Cell;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::money::Money;

/// A record read from a JSON value (by hand, see the module's comment).
pub trait FromJson: Sized {
    fn from_json(value: &Value) -> Result<Self, String>;
}

/// Any JSON, as it is.
impl FromJson for Value {
    fn from_json(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
}

/// A list of records.
impl<T: FromJson> FromJson for Vec<T> {
    fn from_json(value: &Value) -> Result<Self, String> {
        value.as_array().ok_or_else(|| "expected a list".to_string())?.iter().map(T::from_json).collect()
    }
}

/// The fields of one JSON object. A field that is missing or of the wrong type reads as its
/// type's default and the first such error is kept for [`Fields::finish`]: no early return from
/// the middle of a record, each of which would compile its own drops of the fields read so far.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    error: Cell<Option<String>>,
}

impl<'a> Fields<'a> {
    pub fn of(value: &'a Value) -> Result<Self, String> {
        let map = value.as_object().ok_or_else(|| "expected an object".to_string())?;
        Ok(Fields { map, error: Cell::new(None) })
    }

    /// The record read, or the first error.
    pub fn finish<T>(self, record: T) -> Result<T, String> {
        match self.error.into_inner() {
            None => Ok(record),
            Some(e) => Err(e),
        }
    }

    /// A field that must be there.
    pub fn req<T: Default>(&self, name: &str, read: fn(&'a Value) -> Option<T>) -> T {
        match self.map.get(name) {
            None => self.fail(format!("missing field `{name}`")),
            Some(v) => read(v).unwrap_or_else(|| self.fail(invalid(name))),
        }
    }

    /// A field that may be missing (`#[serde(default)]`): its default then.
    pub fn or_default<T: Default>(&self, name: &str, read: fn(&'a Value) -> Option<T>) -> T {
        match self.map.get(name) {
            None => T::default(),
            Some(v) => read(v).unwrap_or_else(|| self.fail(invalid(name))),
        }
    }

    /// An `Option`: missing or null is `None`.
    pub fn opt<T>(&self, name: &str, read: fn(&'a Value) -> Option<T>) -> Option<T> {
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => read(v).or_else(|| self.fail(invalid(name))),
        }
    }

    #[inline(never)]
    fn fail<T: Default>(&self, error: String) -> T {
        let first = self.error.take().unwrap_or(error);
        self.error.set(Some(first));
        T::default()
    }
}

fn invalid(name: &str) -> String {
    format!("invalid type of field `{name}`")
}

pub fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

pub fn u64(v: &Value) -> Option<u64> {
    v.as_u64()
}

pub fn bool(v: &Value) -> Option<bool> {
    v.as_bool()
}

pub fn money(v: &Value) -> Option<Money> {
    v.as_u64().map(Money::from_pico)
}

pub fn object(v: &Value) -> Option<Map<String, Value>> {
    v.as_object().cloned()
}

pub fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(string).collect()
}

pub fn u64s(v: &Value) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Value::as_u64).collect()
}

pub fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    map_of(v, string)
}

pub fn u64_map(v: &Value) -> Option<BTreeMap<String, u64>> {
    map_of(v, Value::as_u64)
}

/// An object whose every value `read` reads. Inserted one by one: `collect` into a map sorts
/// the entries first, a sort compiled per value type (about 4 KB of wasm each).
pub fn map_of<T>(v: &Value, read: fn(&Value) -> Option<T>) -> Option<BTreeMap<String, T>> {
    let mut map = BTreeMap::new();
    for (key, value) in v.as_object()? {
        map.insert(key.clone(), read(value)?);
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_follow_the_rules_of_serdes_derived_readers() {
        let v = json!({"s": "x", "n": 3, "null": null, "list": ["a", "b"], "bad": [1], "map": {"a": 1}});
        // One read at a time: `finish` says whether it failed.
        let read = |r: fn(&Fields) -> Value| {
            let f = Fields::of(&v).unwrap();
            let got = r(&f);
            f.finish(got)
        };
        assert_eq!(read(|f| json!(f.req("s", string))).unwrap(), "x");
        assert_eq!(read(|f| json!(f.req("missing", string))).unwrap_err(), "missing field `missing`");
        assert!(read(|f| json!(f.req("null", string))).is_err(), "null is no string");
        assert!(read(|f| json!(f.req("n", string))).is_err(), "a number is no string");
        assert_eq!(read(|f| json!(f.opt("null", u64))).unwrap(), Value::Null);
        assert_eq!(read(|f| json!(f.opt("missing", u64))).unwrap(), Value::Null);
        assert_eq!(read(|f| json!(f.opt("n", u64))).unwrap(), 3);
        assert!(read(|f| json!(f.opt("s", u64))).is_err());
        assert_eq!(read(|f| json!(f.or_default("missing", strings))).unwrap(), json!([]));
        assert_eq!(read(|f| json!(f.or_default("list", strings))).unwrap(), json!(["a", "b"]));
        assert!(read(|f| json!(f.or_default("bad", strings))).is_err(), "a list of numbers is no list of strings");
        assert!(read(|f| json!(f.or_default("null", strings))).is_err(), "null is no list");
        assert_eq!(read(|f| json!(f.req("map", u64_map))).unwrap(), json!({"a": 1}));
        assert!(read(|f| json!(f.req("map", string_map))).is_err());
        assert!(Fields::of(&json!([1])).is_err());
        // The first error is the one told.
        let f = Fields::of(&v).unwrap();
        let _ = (f.req("n", string), f.req("missing", u64));
        assert_eq!(f.finish(()).unwrap_err(), "invalid type of field `n`");
        assert_eq!(json!(-1).as_u64(), None, "u64 fields refuse negative numbers");
        assert_eq!(money(&json!(1.5)), None, "and fractions");
    }
}
