//! Virtual keys in Workers KV. Layout:
//! - `key:<sha256>`: the [`KeyRecord`], with list metadata (alias, user, team, creation time);
//! - `alias:<alias>`: the hash of the key that has this alias (aliases are unique);
//! - `revoked:<sha256>`: why a secret stopped working (deleted or regenerated), kept 30 days
//!   so that its holder is told which.
//!
//! Names and sizes are checked against KV's own limits before a write
//! ([`KeyRecord::check_kv_limits`]); the uniqueness of aliases is held by the `KeyAlias`
//! Durable Objects, the `alias:` index only serves lookups.
//!
//! KV is eventually consistent between locations (about 60 s). Reads on the request path go
//! through a short per-isolate cache of known keys and one of unknown ones (so that a flood of
//! bad keys costs no KV read each); this isolate's own writes update both at once.

use std::cell::RefCell;

use serde_json::Value;
use worker::js_sys::{Array, Function, Object, Promise, Reflect, JSON};
use worker::kv::KvStore;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, Env};

use super::now_ms;
use crate::cache::ExpiringMap;
use crate::fields::{self, Fields, FromJson};
use crate::json::{self, ObjectWriter, ToJson};
use crate::keys::{alias_kv_key, record_kv_key, revoked_kv_key, KeyRecord, ListMeta};
use crate::openai::ApiError;

const BINDING: &str = "KEYS";
const CACHE_MS: u64 = 10_000;
const CACHE_MAX: usize = 10_000;
/// Unknown secrets are remembered as briefly, and fewer of them: each is a hash and a reason.
const UNKNOWN_MS: u64 = 10_000;
const UNKNOWN_MAX: usize = 4_096;
const REVOKED_TTL_S: u64 = 30 * 86_400;

thread_local! {
    /// hash → record, for keys that exist.
    static KNOWN: RefCell<ExpiringMap<KeyRecord>> = RefCell::new(ExpiringMap::new(CACHE_MAX, CACHE_MS));
    /// hash → the revocation (if any), for secrets that are no key.
    static UNKNOWN: RefCell<ExpiringMap<Option<Revocation>>> =
        RefCell::new(ExpiringMap::new(UNKNOWN_MAX, UNKNOWN_MS));
}

/// Why a secret no longer works.
#[derive(Clone, Debug)]
pub struct Revocation {
    pub reason: String,
    pub at: u64,
}

impl ToJson for Revocation {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Revocation { reason, at } = self;
        let mut o = ObjectWriter::new(out);
        o.field("reason", reason).field("at", at);
        o.end();
    }
}

impl FromJson for Revocation {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let revocation = Revocation { reason: f.req("reason", fields::string), at: f.req("at", fields::u64) };
        f.finish(revocation)
    }
}

/// What a secret presented on a request is.
pub enum Lookup {
    Key(Box<KeyRecord>),
    /// No key; revoked if the secret once was one.
    Unknown(Option<Revocation>),
}

pub struct KeyStore {
    kv: KvStore,
    /// The binding itself, for `list_all`.
    namespace: JsValue,
}

/// The detail goes to the log; the caller learns only which store failed.
pub(super) fn kv_error(e: worker::kv::KvError) -> ApiError {
    console_error!("Workers KV `{BINDING}` failed: {e}");
    ApiError::internal(format!("The key store (Workers KV `{BINDING}`) failed."))
}

/// A JSON value from KV, parsed by serde_json: the binding's own JSON reader goes through
/// JavaScript numbers and refuses integers above 2^53 (budgets in pico-dollars).
pub(super) async fn get_json<T: FromJson>(kv: &KvStore, key: &str) -> Result<Option<T>, ApiError> {
    match get_text(kv, key).await? {
        None => Ok(None),
        Some(text) => crate::json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| T::from_json(&v))
            .map(Some)
            .map_err(|e| {
                console_error!("Workers KV `{BINDING}` holds an unreadable value under {key}: {e}");
                ApiError::internal(format!("The key store (Workers KV `{BINDING}`) holds an unreadable value."))
            }),
    }
}

/// Every key under `prefix` in the namespace, with its list metadata, page after page. Called on
/// the namespace itself: worker's `list` reads its answer through serde_wasm_bindgen, whose
/// reader of the metadata (any JSON) costs about 13 KB of wasm; the metadata goes through its
/// JSON text instead.
pub(super) async fn list_all(namespace: &JsValue, prefix: &str) -> Result<Vec<(String, Option<Value>)>, ApiError> {
    list_pages(namespace, prefix).await.map_err(|e| {
        console_error!("Workers KV `{BINDING}` failed to list: {e:?}");
        ApiError::internal(format!("The key store (Workers KV `{BINDING}`) failed."))
    })
}

async fn list_pages(namespace: &JsValue, prefix: &str) -> Result<Vec<(String, Option<Value>)>, JsValue> {
    let get = |target: &JsValue, name: &str| Reflect::get(target, &JsValue::from_str(name));
    let list: Function = get(namespace, "list")?.dyn_into()?;
    let mut keys = Vec::new();
    let mut cursor = JsValue::UNDEFINED;
    loop {
        let options = Object::new();
        Reflect::set(&options, &JsValue::from_str("prefix"), &JsValue::from_str(prefix))?;
        if !cursor.is_undefined() {
            Reflect::set(&options, &JsValue::from_str("cursor"), &cursor)?;
        }
        let page = JsFuture::from(list.call1(namespace, &options)?.dyn_into::<Promise>()?).await?;
        for key in get(&page, "keys")?.dyn_into::<Array>()?.iter() {
            let name = get(&key, "name")?.as_string().unwrap_or_default();
            let metadata = get(&key, "metadata")?;
            let metadata = if metadata.is_undefined() || metadata.is_null() {
                None
            } else {
                JSON::stringify(&metadata)?.as_string().and_then(|text| json::from_str(&text).ok())
            };
            keys.push((name, metadata));
        }
        cursor = get(&page, "cursor")?;
        let complete = get(&page, "list_complete")?.as_bool().unwrap_or(true);
        if complete || cursor.as_string().is_none_or(|c| c.is_empty()) {
            return Ok(keys);
        }
    }
}

/// The read itself, not generic: one copy of it in the module whatever `get_json` parses.
async fn get_text(kv: &KvStore, key: &str) -> Result<Option<String>, ApiError> {
    kv.get(key).text().await.map_err(kv_error)
}

impl KeyStore {
    pub fn open(env: &Env) -> Result<Self, ApiError> {
        let namespace = Reflect::get(env, &JsValue::from_str(BINDING)).unwrap_or(JsValue::UNDEFINED);
        env.kv(BINDING).map(|kv| KeyStore { kv, namespace }).map_err(|_| {
            ApiError::internal(format!(
                "The gateway is misconfigured: the KV namespace binding `{BINDING}` is missing."
            ))
        })
    }

    /// The key a request presents: from the isolate's caches when fresh, else from KV (the
    /// record, then for an unknown secret its tombstone).
    pub async fn lookup(&self, hash: &str) -> Result<Lookup, ApiError> {
        let now = now_ms();
        if let Some(record) = KNOWN.with(|c| c.borrow().get(hash, now)) {
            return Ok(Lookup::Key(Box::new(record)));
        }
        if let Some(revocation) = UNKNOWN.with(|c| c.borrow().get(hash, now)) {
            return Ok(Lookup::Unknown(revocation));
        }
        if let Some(record) = self.get_fresh(hash).await? {
            remember(&record, now);
            return Ok(Lookup::Key(Box::new(record)));
        }
        let revocation = self.revocation(hash).await?;
        // Unless this isolate wrote the key while the reads were under way.
        if KNOWN.with(|c| c.borrow().get(hash, now_ms()).is_none()) {
            UNKNOWN.with(|c| c.borrow_mut().insert(hash, revocation.clone(), now));
        }
        Ok(Lookup::Unknown(revocation))
    }

    /// The key as KV has it now, for management calls that read before they write.
    pub async fn get_fresh(&self, hash: &str) -> Result<Option<KeyRecord>, ApiError> {
        get_json(&self.kv, &record_kv_key(hash)).await
    }

    pub async fn revocation(&self, hash: &str) -> Result<Option<Revocation>, ApiError> {
        get_json(&self.kv, &revoked_kv_key(hash)).await
    }

    /// The hash of the key with this alias; the alias must fit a KV key (`check_alias`).
    pub async fn hash_for_alias(&self, alias: &str) -> Result<Option<String>, ApiError> {
        self.kv.get(&alias_kv_key(alias)).text().await.map_err(kv_error)
    }

    /// Writes a key and its alias index; `previous_alias` is dropped from the index if it changed.
    pub async fn put(&self, record: &KeyRecord, previous_alias: Option<&str>) -> Result<(), ApiError> {
        record.check_kv_limits()?;
        // As a JSON value: `metadata` takes any `Serialize`, and `ListMeta` is written by hand.
        let meta: Value =
            json::from_str(&json::to_string(&record.list_meta())).map_err(|e| ApiError::internal(e.to_string()))?;
        let value = json::to_string(record);
        let key = record_kv_key(&record.key_hash);
        // Values go in as bytes (the same UTF-8 that `text()` reads back): worker's `put` sends
        // text through serde_wasm_bindgen and a number check, which links core's float
        // formatting into the wasm for nothing.
        self.kv
            .put_bytes(&key, value.as_bytes())
            .map_err(kv_error)?
            .metadata(meta)
            .map_err(kv_error)?
            .execute()
            .await
            .map_err(kv_error)?;
        if let Some(alias) = &record.key_alias {
            let index = alias_kv_key(alias);
            let hash = record.key_hash.as_bytes();
            self.kv.put_bytes(&index, hash).map_err(kv_error)?.execute().await.map_err(kv_error)?;
        }
        if let Some(old) = previous_alias.filter(|old| Some(*old) != record.key_alias.as_deref()) {
            self.kv.delete(&alias_kv_key(old)).await.map_err(kv_error)?;
        }
        remember(record, now_ms());
        Ok(())
    }

    /// Removes a secret: the record under `hash` goes, a tombstone says why. The alias index is
    /// dropped too unless the key lives on under a new secret (`keep_alias`).
    pub async fn revoke(&self, record: &KeyRecord, reason: &str, keep_alias: bool) -> Result<(), ApiError> {
        let now = now_ms();
        let revocation = Revocation { reason: reason.to_string(), at: now };
        let tombstone = json::to_string(&revocation);
        let revoked = revoked_kv_key(&record.key_hash);
        self.kv
            .put_bytes(&revoked, tombstone.as_bytes())
            .map_err(kv_error)?
            .expiration_ttl(REVOKED_TTL_S)
            .execute()
            .await
            .map_err(kv_error)?;
        self.kv.delete(&record_kv_key(&record.key_hash)).await.map_err(kv_error)?;
        if let (false, Some(alias)) = (keep_alias, &record.key_alias) {
            self.kv.delete(&alias_kv_key(alias)).await.map_err(kv_error)?;
        }
        KNOWN.with(|c| c.borrow_mut().remove(&record.key_hash));
        UNKNOWN.with(|c| c.borrow_mut().insert(&record.key_hash, Some(revocation), now));
        Ok(())
    }

    /// Forgets that a secret was revoked (a caller chose it again for a new key).
    pub async fn clear_revocation(&self, hash: &str) -> Result<(), ApiError> {
        UNKNOWN.with(|c| c.borrow_mut().remove(hash));
        self.kv.delete(&revoked_kv_key(hash)).await.map_err(kv_error)
    }

    /// Every key's hash and list metadata.
    pub async fn list(&self) -> Result<Vec<(String, ListMeta)>, ApiError> {
        let keys = list_all(&self.namespace, "key:").await?;
        let entries = keys.into_iter().map(|(name, metadata)| {
            let hash = name.trim_start_matches("key:").to_string();
            (hash, metadata.and_then(|m| ListMeta::from_json(&m).ok()).unwrap_or_default())
        });
        Ok(entries.collect())
    }
}

/// A key that exists now: known, and no longer unknown (a caller may have chosen a secret
/// that was refused a moment ago).
fn remember(record: &KeyRecord, now: u64) {
    UNKNOWN.with(|c| c.borrow_mut().remove(&record.key_hash));
    KNOWN.with(|c| c.borrow_mut().insert(&record.key_hash, record.clone(), now));
}
