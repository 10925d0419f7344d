//! JSON text parsed through one reader type.
//!
//! serde_json compiles a type's deserialiser once per reader: parsing the same types with both
//! `from_str` and `from_slice` puts two copies of each in the wasm. The gateway parses bytes
//! only; text is parsed as its bytes, with the same result (it is valid UTF-8 already).

use serde::de::DeserializeOwned;

/// `serde_json::from_str`, through `from_slice`'s reader.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_slice(text.as_bytes())
}
