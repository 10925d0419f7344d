//! Teams, internal users and customers in Workers KV (the `KEYS` namespace, under `team:<id>`,
//! `user:<id>` and `customer:<id>`), and the parties a request draws on.
//!
//! Reads on the request path go through a short per-isolate cache, which also remembers ids
//! that have no record (an end user that is no customer costs no KV read per request); this
//! isolate's own writes update it at once. Elsewhere a change shows within the cache's 10 s
//! plus KV's propagation (about 60 s); blocks reach the party's ledger at once.

use std::cell::RefCell;

use worker::js_sys::Reflect;
use worker::kv::KvStore;
use worker::wasm_bindgen::JsValue;
use worker::Env;

use super::keystore::{get_json, kv_error, list_all};
use super::{now_ms, Caller};
use crate::cache::ExpiringMap;
use crate::config::AccessGroup;
use crate::openai::ApiError;
use crate::parties::{PartyKind, PartyRecord};
use crate::refusals;

const BINDING: &str = "KEYS";
const CACHE_MS: u64 = 10_000;
const CACHE_MAX: usize = 10_000;

thread_local! {
    /// KV key → the record, or `None` for an id known to have none.
    static CACHE: RefCell<ExpiringMap<Option<PartyRecord>>> = RefCell::new(ExpiringMap::new(CACHE_MAX, CACHE_MS));
}

/// A party a request draws on.
pub struct Drawn {
    pub kind: PartyKind,
    pub record: PartyRecord,
}

pub struct PartyStore {
    kv: KvStore,
    /// The binding itself, for `list_all`.
    namespace: JsValue,
}

impl PartyStore {
    pub fn open(env: &Env) -> Result<Self, ApiError> {
        let namespace = Reflect::get(env, &JsValue::from_str(BINDING)).unwrap_or(JsValue::UNDEFINED);
        env.kv(BINDING).map(|kv| PartyStore { kv, namespace }).map_err(|_| {
            ApiError::internal(format!(
                "The gateway is misconfigured: the KV namespace binding `{BINDING}` is missing."
            ))
        })
    }

    /// The record as the request path sees it: from the isolate's cache when fresh.
    pub async fn lookup(&self, kind: PartyKind, id: &str) -> Result<Option<PartyRecord>, ApiError> {
        let Some(key) = kind.kv_key(id) else { return Ok(None) };
        let now = now_ms();
        if let Some(cached) = CACHE.with(|c| c.borrow().get(&key, now)) {
            return Ok(cached);
        }
        let record: Option<PartyRecord> = get_json(&self.kv, &key).await?;
        CACHE.with(|c| c.borrow_mut().insert(&key, record.clone(), now));
        Ok(record)
    }

    /// The record as KV has it now, for management calls that read before they write.
    pub async fn get_fresh(&self, kind: PartyKind, id: &str) -> Result<Option<PartyRecord>, ApiError> {
        match kind.kv_key(id) {
            Some(key) => get_json(&self.kv, &key).await,
            None => Ok(None),
        }
    }

    pub async fn put(&self, kind: PartyKind, record: &PartyRecord) -> Result<(), ApiError> {
        let key = kind.kv_key(&record.id).ok_or_else(|| ApiError::internal("a party id too long for KV"))?;
        let value = crate::json::to_string(record);
        // As bytes: see `keystore::KeyStore::put`.
        self.kv.put_bytes(&key, value.as_bytes()).map_err(kv_error)?.execute().await.map_err(kv_error)?;
        CACHE.with(|c| c.borrow_mut().insert(&key, Some(record.clone()), now_ms()));
        Ok(())
    }

    pub async fn delete(&self, kind: PartyKind, id: &str) -> Result<(), ApiError> {
        let Some(key) = kind.kv_key(id) else { return Ok(()) };
        self.kv.delete(&key).await.map_err(kv_error)?;
        CACHE.with(|c| c.borrow_mut().insert(&key, None, now_ms()));
        Ok(())
    }

    /// Every record of `kind`, by id.
    pub async fn list(&self, kind: PartyKind) -> Result<Vec<PartyRecord>, ApiError> {
        let prefix = format!("{}:", kind.prefix());
        let mut records = Vec::new();
        for (name, _) in list_all(&self.namespace, &prefix).await? {
            if let Some(record) = get_json::<PartyRecord>(&self.kv, &name).await? {
                records.push(record);
            }
        }
        // KV lists keys in order: the records come sorted by id.
        Ok(records)
    }
}

/// The parties a request draws on besides its key: the key's team (which must exist), the
/// key's internal user and the end user, each when it has a record; read at once. A blocked
/// team or customer is refused here. A request with none of them reads nothing.
pub async fn drawn_by(env: &Env, caller: &Caller, end_user: Option<&str>) -> Result<Vec<Drawn>, ApiError> {
    let (team, user) = match caller {
        Caller::Master => (None, None),
        Caller::Key(r) => (r.team_id.as_deref(), r.user_id.as_deref()),
    };
    if team.is_none() && user.is_none() && end_user.is_none() {
        return Ok(Vec::new());
    }
    // One after another: mostly the isolate's cache answers, without I/O.
    let store = PartyStore::open(env)?;
    let mut found = [None, None, None];
    for (slot, (kind, id)) in
        found.iter_mut().zip([(PartyKind::Team, team), (PartyKind::User, user), (PartyKind::Customer, end_user)])
    {
        if let Some(id) = id {
            *slot = store.lookup(kind, id).await?.map(|record| Drawn { kind, record });
        }
    }
    let [t, u, c] = found;
    if let (Some(id), None) = (team, &t) {
        return Err(refusals::party_blocked(&format!("Team={id}"), "deleted", ""));
    }
    let drawn: Vec<Drawn> = [t, u, c].into_iter().flatten().collect();
    for d in &drawn {
        if d.record.blocked {
            let label = format!("{}={}", d.kind.label(), d.record.id);
            return Err(refusals::party_blocked(&label, "blocked", d.kind.unblock_path()));
        }
    }
    Ok(drawn)
}

/// A key's team and user must allow the model group too (an empty `models`: all).
pub fn check_models(drawn: &[Drawn], group: &str, access_groups: &[AccessGroup]) -> Result<(), ApiError> {
    match drawn.iter().find(|d| !d.record.may_use(group, access_groups)) {
        Some(d) => Err(refusals::party_model_not_allowed(
            &format!("{}={}", d.kind.label(), d.record.id),
            group,
            &d.record.models,
        )),
        None => Ok(()),
    }
}
