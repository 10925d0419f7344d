//! JSON as the gateway reads and writes it, in two ways that keep the wasm small and fast:
//!
//! - Compact JSON text of `serde_json` values, written straight into a byte buffer: exactly the
//!   bytes `serde_json::to_vec` writes, but without its escaping loop, which the size-optimised
//!   build (`opt-level = "z"`) leaves as a function call per byte of every string. Request
//!   bodies, answers and stream chunks are mostly string bytes.
//! - Records and messages written by hand ([`ToJson`]): one small method per type instead of
//!   serde's derived `Serialize`, which compiles the writing of every field inline, through
//!   serde_json's generic serializer, once per type (about 38 KB of wasm for the gateway's
//!   records and messages). The bytes are the derive's (field order, `null`s, numbers); the
//!   unit tests hold each writer to the derive where one is kept for them.
//! - Text parsed through one reader type: serde_json compiles a type's deserialiser once per
//!   reader, so parsing the same types with both `from_str` and `from_slice` puts two copies of
//!   each in the wasm. The gateway parses bytes only; text is parsed as its bytes.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use crate::money::Money;

/// A type written as compact JSON by hand (see the module's comment).
pub trait ToJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// `value` as compact JSON text.
pub fn to_string(value: &(impl ToJson + ?Sized)) -> String {
    let mut out = Vec::with_capacity(128);
    value.write_json(&mut out);
    // Only UTF-8 is ever written (strings as they are, the rest ASCII): this cannot fail.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes one object's fields in the order given: `{"a":1,"b":null}`.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// A field, always written (`None` as `null`).
    #[inline]
    pub fn field(&mut self, name: &str, value: &(impl ToJson + ?Sized)) -> &mut Self {
        self.key(name);
        value.write_json(self.out);
        self
    }

    /// A field written only when it has a value (`skip_serializing_if = "Option::is_none"`).
    #[inline]
    pub fn some<T: ToJson>(&mut self, name: &str, value: &Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.field(name, v);
        }
        self
    }

    fn key(&mut self, name: &str) {
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        write_str(self.out, name);
        self.out.push(b':');
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

impl<T: ToJson + ?Sized> ToJson for &T {
    fn write_json(&self, out: &mut Vec<u8>) {
        (**self).write_json(out)
    }
}

impl ToJson for str {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_str(out, self)
    }
}

impl ToJson for String {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_str(out, self)
    }
}

impl ToJson for u64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_u64(out, *self)
    }
}

impl ToJson for u32 {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_u64(out, u64::from(*self))
    }
}

impl ToJson for u16 {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_u64(out, u64::from(*self))
    }
}

impl ToJson for usize {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_u64(out, *self as u64)
    }
}

impl ToJson for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" })
    }
}

/// Pico-dollars, a whole number (as `#[serde(transparent)]` wrote it).
impl ToJson for Money {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_u64(out, self.pico())
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => v.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
    }
}

impl<T: ToJson> ToJson for [T] {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write_json(out);
        }
        out.push(b']');
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        self.as_slice().write_json(out)
    }
}

/// A pair as a two-item list, as serde writes a tuple.
impl<A: ToJson, B: ToJson> ToJson for (A, B) {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        self.0.write_json(out);
        out.push(b',');
        self.1.write_json(out);
        out.push(b']');
    }
}

/// Four items as a list, as serde writes a tuple (the ledger's rows for `json_each`).
impl<A: ToJson, B: ToJson, C: ToJson, D: ToJson> ToJson for (A, B, C, D) {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        self.0.write_json(out);
        out.push(b',');
        self.1.write_json(out);
        out.push(b',');
        self.2.write_json(out);
        out.push(b',');
        self.3.write_json(out);
        out.push(b']');
    }
}

impl<V: ToJson> ToJson for BTreeMap<String, V> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = ObjectWriter::new(out);
        for (key, value) in self {
            object.field(key, value);
        }
        object.end();
    }
}

impl ToJson for Value {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_value(out, self)
    }
}

impl ToJson for Map<String, Value> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_map(out, self)
    }
}

/// `value` as compact JSON (`serde_json::to_vec`'s bytes).
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// An object as compact JSON (`serde_json::to_vec`'s bytes).
pub fn map_to_vec(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_map(&mut out, map);
    out
}

/// Appends `value` as compact JSON.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// Appends an object as compact JSON, its keys in the map's order.
pub fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    write_entries(out, map.iter());
}

/// Appends an object of these entries, in this order.
pub fn write_entries<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// An unsigned integer in decimal, as serde_json (itoa) writes it.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Numbers: serde_json's own formatting (itoa, shortest round-trip floats).
pub fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        return write_u64(out, u);
    }
    // Number's Display is the same text (itoa, zmij) through core::fmt: `to_writer` would
    // link std::io's writer and error machinery into the wasm for this one call.
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Appends a JSON string: `"` and `\` escaped, control characters as `\b \t \n \f \r` or
/// `\u00XX` (lower-case hex), everything else (DEL, `/`, non-ASCII) as it is: serde_json's
/// rules.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none of them needs escaping.
        while let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
            if needs_escape(word) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
        if b >= 0x20 && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is below 0x20, a `"` or a `\` (bit tricks on eight bytes; a
/// false positive only sends the word through the byte loop).
fn needs_escape(word: u64) -> bool {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    (below_space | zero_byte(quote) | zero_byte(backslash)) & HIGHS != 0
}

/// `serde_json::from_str`, through `from_slice`'s reader.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_slice(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn text(rng: &mut Rng) -> String {
        let palette: Vec<char> = (0u8..0x80)
            .map(char::from)
            .chain(['é', 'ß', '日', '本', '🚀', '\u{2028}', '\u{2029}', '\u{feff}', '\u{ffff}', '\u{10ffff}'])
            .collect();
        let len = rng.below(40) as usize;
        (0..len)
            .map(|_| {
                // Mostly plain letters, as real text, so that the eight-byte path is exercised.
                if rng.below(4) == 0 {
                    palette[rng.below(palette.len() as u64) as usize]
                } else {
                    char::from(b'a' + rng.below(26) as u8)
                }
            })
            .collect()
    }

    fn value(rng: &mut Rng, depth: u32) -> Value {
        match rng.below(if depth > 3 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => {
                let numbers = [
                    json!(0),
                    json!(u64::MAX),
                    json!(i64::MIN),
                    json!(-1),
                    json!(0.1),
                    json!(-0.0),
                    json!(1e300),
                    json!(5e-324),
                    json!(100.0),
                    json!(1e21),
                    json!(123456789.125),
                ];
                numbers[rng.below(numbers.len() as u64) as usize].clone()
            }
            3 => json!(rng.next()),
            4 | 5 => Value::String(text(rng)),
            6 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth + 1)).collect()),
            _ => Value::Object((0..rng.below(6)).map(|_| (text(rng), value(rng, depth + 1))).collect()),
        }
    }

    #[test]
    fn every_value_is_written_as_serde_json_writes_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5_000 {
            let v = value(&mut rng, 0);
            assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn the_generic_writers_write_as_serde_json_writes() {
        let id = "c\"1".to_string();
        let rows = vec![(&id, &id, 7u64, "{\"a\":1}".to_string())];
        assert_eq!(to_string(&rows), serde_json::to_string(&rows).unwrap());
        let pairs: Vec<(String, Vec<String>)> =
            vec![("g".into(), vec!["a".into(), "b\n".into()]), ("h".into(), vec![])];
        assert_eq!(to_string(&pairs), serde_json::to_string(&pairs).unwrap());
        let map: BTreeMap<String, Option<u64>> = [("x".to_string(), None), ("y\u{1}".to_string(), Some(3))].into();
        assert_eq!(to_string(&map), serde_json::to_string(&map).unwrap());
        let scalars = (true, (u16::MAX, u32::MAX), usize::MAX, Money::from_pico(u64::MAX));
        assert_eq!(to_string(&scalars), serde_json::to_string(&scalars).unwrap());
        let empty: Vec<Value> = Vec::new();
        assert_eq!(to_string(&(&empty, &json!({"k": [null, 1.5, "s"]}))), r#"[[],{"k":[null,1.5,"s"]}]"#);
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn every_byte_escapes_as_serde_json_escapes_it() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            // Alone, and at every offset of a word, so that both loops meet it.
            for prefix in 0..10 {
                let s: String = "x".repeat(prefix) + &c.to_string() + "yyyyyyyyy";
                let v = Value::String(s);
                assert_eq!(to_vec(&v), serde_json::to_vec(&v).unwrap(), "byte {b:#x} after {prefix}");
            }
        }
        let map = json!({"a\"b": [1, "\u{1f}", {"": null}], "é": 2.5}).as_object().unwrap().clone();
        assert_eq!(map_to_vec(&map), serde_json::to_vec(&map).unwrap());
    }
}
