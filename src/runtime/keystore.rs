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
//! through a short per-isolate cache, which this isolate's own writes update at once.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::kv::KvStore;
use worker::{console_error, Env};

use super::now_ms;
use crate::keys::{alias_kv_key, record_kv_key, revoked_kv_key, KeyRecord, ListMeta};
use crate::openai::ApiError;

const BINDING: &str = "KEYS";
const CACHE_MS: u64 = 10_000;
const CACHE_MAX: usize = 10_000;
const REVOKED_TTL_S: u64 = 30 * 86_400;

thread_local! {
    /// hash → (cached until, record). Only keys that exist are cached.
    static CACHE: RefCell<HashMap<String, (u64, KeyRecord)>> = RefCell::new(HashMap::new());
}

/// Why a secret no longer works.
#[derive(Debug, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: String,
    pub at: u64,
}

pub struct KeyStore {
    kv: KvStore,
}

/// The detail goes to the log; the caller learns only which store failed.
fn kv_error(e: worker::kv::KvError) -> ApiError {
    console_error!("Workers KV `{BINDING}` failed: {e}");
    ApiError::internal(format!("The key store (Workers KV `{BINDING}`) failed."))
}

/// A JSON value from KV, parsed by serde_json: the binding's own JSON reader goes through
/// JavaScript numbers and refuses integers above 2^53 (budgets in pico-dollars).
async fn get_json<T: DeserializeOwned>(kv: &KvStore, key: &str) -> Result<Option<T>, ApiError> {
    match kv.get(key).text().await.map_err(kv_error)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            console_error!("Workers KV `{BINDING}` holds an unreadable value under {key}: {e}");
            ApiError::internal(format!("The key store (Workers KV `{BINDING}`) holds an unreadable value."))
        }),
    }
}

impl KeyStore {
    pub fn open(env: &Env) -> Result<Self, ApiError> {
        env.kv(BINDING).map(|kv| KeyStore { kv }).map_err(|_| {
            ApiError::internal(format!(
                "The gateway is misconfigured: the KV namespace binding `{BINDING}` is missing."
            ))
        })
    }

    /// The key for a request: from the isolate cache when fresh, else from KV.
    pub async fn get(&self, hash: &str) -> Result<Option<KeyRecord>, ApiError> {
        let now = now_ms();
        let cached = CACHE.with(|c| c.borrow().get(hash).filter(|(until, _)| *until > now).map(|(_, r)| r.clone()));
        if cached.is_some() {
            return Ok(cached);
        }
        let record = self.get_fresh(hash).await?;
        if let Some(r) = &record {
            remember(r, now);
        }
        Ok(record)
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
        let meta = record.list_meta();
        let value = serde_json::to_string(record).map_err(|e| ApiError::internal(e.to_string()))?;
        let key = record_kv_key(&record.token);
        self.kv
            .put(&key, value)
            .map_err(kv_error)?
            .metadata(meta)
            .map_err(kv_error)?
            .execute()
            .await
            .map_err(kv_error)?;
        if let Some(alias) = &record.key_alias {
            let index = alias_kv_key(alias);
            self.kv.put(&index, record.token.as_str()).map_err(kv_error)?.execute().await.map_err(kv_error)?;
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
        let tombstone = serde_json::to_string(&Revocation { reason: reason.to_string(), at: now_ms() })
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let revoked = revoked_kv_key(&record.token);
        self.kv
            .put(&revoked, tombstone)
            .map_err(kv_error)?
            .expiration_ttl(REVOKED_TTL_S)
            .execute()
            .await
            .map_err(kv_error)?;
        self.kv.delete(&record_kv_key(&record.token)).await.map_err(kv_error)?;
        if let (false, Some(alias)) = (keep_alias, &record.key_alias) {
            self.kv.delete(&alias_kv_key(alias)).await.map_err(kv_error)?;
        }
        CACHE.with(|c| c.borrow_mut().remove(&record.token));
        Ok(())
    }

    /// Forgets that a secret was revoked (a caller chose it again for a new key).
    pub async fn clear_revocation(&self, hash: &str) -> Result<(), ApiError> {
        self.kv.delete(&revoked_kv_key(hash)).await.map_err(kv_error)
    }

    /// Every key's hash and list metadata.
    pub async fn list(&self) -> Result<Vec<(String, ListMeta)>, ApiError> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = self.kv.list().prefix("key:".into());
            if let Some(c) = cursor.take() {
                request = request.cursor(c);
            }
            let page = request.execute().await.map_err(kv_error)?;
            for key in page.keys {
                let hash = key.name.trim_start_matches("key:").to_string();
                let meta = key.metadata.and_then(|m| serde_json::from_value(m).ok()).unwrap_or_default();
                entries.push((hash, meta));
            }
            match page.cursor.filter(|c| !page.list_complete && !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => return Ok(entries),
            }
        }
    }
}

fn remember(record: &KeyRecord, now: u64) {
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(record.token.clone(), (now + CACHE_MS, record.clone()));
    });
}
