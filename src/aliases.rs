//! Unique `key_alias`es. Workers KV cannot tell two racing writers apart, so each alias is
//! held by one Durable Object (named after the alias's hash), which grants it to one key at a
//! time. The holder is the key's stable `key_id`, so a regenerated key keeps its alias
//! without a call. This module is the object's rule and what the worker and it say.

use serde::{Deserialize, Serialize};

use crate::fields::{Fields, FromJson};
use crate::json::{ObjectWriter, ToJson};

use crate::keys::hash_key;

/// The Durable Object that holds `alias`. Hashed: any alias gives a short, fixed-size name.
pub fn object_name(alias: &str) -> String {
    format!("alias:{}", hash_key(alias))
}

/// `/claim` and `/release` both name the key asking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRequest {
    pub key_id: String,
}

/// What `/claim` and `/release` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasAnswer {
    /// `/claim`: the key holds the alias now. `/release`: the key held it and no longer does.
    pub ok: bool,
}

/// Read by hand ([`FromJson`]: a smaller wasm).
impl FromJson for AliasRequest {
    fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let request = AliasRequest { key_id: f.req("key_id", crate::fields::string) };
        f.finish(request)
    }
}

/// Read by hand ([`FromJson`]: a smaller wasm).
impl FromJson for AliasAnswer {
    fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let answer = AliasAnswer { ok: f.req("ok", crate::fields::bool) };
        f.finish(answer)
    }
}

/// Written by hand ([`ToJson`]: a smaller wasm).
impl ToJson for AliasRequest {
    fn write_json(&self, out: &mut Vec<u8>) {
        let AliasRequest { key_id } = self;
        let mut o = ObjectWriter::new(out);
        o.field("key_id", key_id);
        o.end();
    }
}

/// Written by hand ([`ToJson`]: a smaller wasm).
impl ToJson for AliasAnswer {
    fn write_json(&self, out: &mut Vec<u8>) {
        let AliasAnswer { ok } = self;
        let mut o = ObjectWriter::new(out);
        o.field("ok", ok);
        o.end();
    }
}

/// The state of one alias's object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasHolder {
    pub key_id: Option<String>,
}

impl AliasHolder {
    /// Grants the alias to `key_id` if it is free or already that key's.
    pub fn claim(&mut self, key_id: &str) -> bool {
        match &self.key_id {
            Some(holder) => holder == key_id,
            None => {
                self.key_id = Some(key_id.to_string());
                true
            }
        }
    }

    /// Frees the alias if `key_id` holds it; another key's hold is left alone.
    pub fn release(&mut self, key_id: &str) -> bool {
        if self.key_id.as_deref() == Some(key_id) {
            self.key_id = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_at_a_time_holds_an_alias() {
        let mut a = AliasHolder::default();
        assert!(a.claim("key-1"));
        assert!(a.claim("key-1"), "claiming again is idempotent");
        assert!(!a.claim("key-2"));
        assert_eq!(a.key_id.as_deref(), Some("key-1"));
    }

    #[test]
    fn only_the_holder_releases_and_then_anyone_may_claim() {
        let mut a = AliasHolder::default();
        assert!(a.claim("key-1"));
        assert!(!a.release("key-2"));
        assert!(!a.claim("key-2"));
        assert!(a.release("key-1"));
        assert!(!a.release("key-1"));
        assert!(a.claim("key-2"));
    }

    #[test]
    fn messages_are_written_as_serde_writes_them() {
        for key_id in ["k", "k\"\u{1}é"] {
            let request = AliasRequest { key_id: key_id.into() };
            assert_eq!(crate::json::to_string(&request), serde_json::to_string(&request).unwrap());
        }
        for ok in [true, false] {
            assert_eq!(
                crate::json::to_string(&AliasAnswer { ok }),
                serde_json::to_string(&AliasAnswer { ok }).unwrap()
            );
        }
    }

    #[test]
    fn object_names_are_short_and_distinct() {
        let long = "é".repeat(1000);
        assert_eq!(object_name(&long).len(), "alias:".len() + 64);
        assert_ne!(object_name("team-a"), object_name("team-b"));
        assert_eq!(object_name("team-a"), object_name("team-a"));
    }
}
