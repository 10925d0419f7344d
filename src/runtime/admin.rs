//! LiteLLM's key-management API (`/key/*`): master key only, except `/key/info` on oneself.

use serde_json::{json, Map, Value};
use worker::Request;

use super::accounting;
use super::keystore::KeyStore;
use super::objects::key_alias as aliases;
use super::objects::ledger::LedgerStub;
use super::partystore::PartyStore;
use super::{now_ms, read_body, vars, Call, Caller};
use crate::embedded;
use crate::endpoints::{self, Endpoint};
use crate::ids;
use crate::keys::{self, KeyRecord};
use crate::ledger::messages::{self, InfoRequest};
use crate::ledger::Limits;
use crate::money::Money;
use crate::openai::{parse_object, ApiError};
use crate::parties::PartyKind;

const MAX_PAGE_SIZE: usize = 100;

pub async fn handle(route: Endpoint, req: Request, call: &mut Call<'_>, caller: Caller) -> Result<Value, ApiError> {
    let store = KeyStore::open(call.env)?;
    if route == Endpoint::KeyInfo {
        return info(&req, &store, &caller, call).await;
    }
    if !matches!(caller, Caller::Master) {
        super::drain(req.inner()).await;
        return Err(ApiError::forbidden("Only the master key may manage keys."));
    }
    if route == Endpoint::KeyList {
        return list(&req, &store, call).await;
    }
    let body = parse_object(&read_body(req.inner()).await?)?;
    match route {
        Endpoint::KeyGenerate => generate(&body, &store, call).await,
        Endpoint::KeyUpdate => update(&body, &store, call).await,
        Endpoint::KeyDelete => delete(&body, &store, call).await,
        Endpoint::KeyRegenerate(in_path) => regenerate(in_path.as_deref(), &body, &store, call).await,
        Endpoint::KeyBlock => set_blocked(&body, &store, call, true).await,
        Endpoint::KeyUnblock => set_blocked(&body, &store, call, false).await,
        _ => Err(ApiError::not_found("Unknown key route")),
    }
}

/// `POST /key/generate`: a new key, returned in clear this once.
async fn generate(body: &Map<String, Value>, store: &KeyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let now = now_ms();
    let changes = keys::parse_changes(body, now)?;
    let key = match body.get("key") {
        Some(v) => keys::chosen_key(v, "key")?,
        None => new_secret()?,
    };
    refuse_master_key(&key, "key", call)?;
    let hash = keys::hash_key(&key);
    if store.get_fresh(&hash).await?.is_some() {
        return Err(ApiError::invalid_request("A key with this secret already exists.", "key"));
    }
    let mut record = KeyRecord::new(&key, ids::uuid_v4().map_err(random_error)?, now);
    record.apply(changes, now);
    validate(&record, store, None, call).await?;
    claim_alias(call, &record, None).await?;
    let written = async {
        if store.revocation(&hash).await?.is_some() {
            store.clear_revocation(&hash).await?;
        }
        store.put(&record, None).await
    };
    unclaim_on_error(call, &record, None, written.await).await?;
    Ok(with_secret(record.to_api(Money::ZERO, None), &key))
}

/// `POST /key/update`: changes the fields given; the secret stays.
async fn update(body: &Map<String, Value>, store: &KeyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let mut record = find(body_key(body)?, store).await?;
    let previous_alias = record.key_alias.clone();
    record.apply(keys::parse_changes(body, now_ms())?, now_ms());
    validate(&record, store, previous_alias.as_deref(), call).await?;
    claim_alias(call, &record, previous_alias.as_deref()).await?;
    let written = store.put(&record, previous_alias.as_deref()).await;
    unclaim_on_error(call, &record, previous_alias.as_deref(), written).await?;
    release_previous_alias(call, &record, previous_alias.as_deref()).await?;
    sync_ledger(call, &record, None).await?;
    view(&record, call).await
}

/// `POST /key/delete`: `keys` (secrets or hashes) and/or `key_aliases`. Nothing is deleted
/// unless every key named exists.
async fn delete(body: &Map<String, Value>, store: &KeyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    if let Some(field) = body.keys().find(|k| !["keys", "key_aliases"].contains(&k.as_str())) {
        return Err(ApiError::invalid_request(format!("Invalid `{field}`: unknown field"), field));
    }
    let list = |field: &str| -> Result<Vec<String>, ApiError> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::invalid_request(format!("Invalid `{field}`: must be a list of strings"), field)
                    })
                })
                .collect(),
            Some(_) => Err(ApiError::invalid_request(format!("Invalid `{field}`: must be a list of strings"), field)),
        }
    };
    let (named_keys, named_aliases) = (list("keys")?, list("key_aliases")?);
    for alias in &named_aliases {
        keys::check_alias(alias, "key_aliases")?;
    }
    if named_keys.is_empty() && named_aliases.is_empty() {
        return Err(ApiError::invalid_request("Give `keys` or `key_aliases` to delete.", "keys"));
    }
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for key in &named_keys {
        match store.get_fresh(&keys::token_of(key)).await? {
            Some(r) => records.push(r),
            None => missing.push(describe(key)),
        }
    }
    for alias in &named_aliases {
        match store.hash_for_alias(alias).await? {
            Some(hash) => match store.get_fresh(&hash).await? {
                Some(r) => records.push(r),
                None => missing.push(format!("alias `{alias}`")),
            },
            None => missing.push(format!("alias `{alias}`")),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::not_found(format!("No such key: {}. Nothing was deleted.", missing.join(", ")))
            .with_param("keys"));
    }
    let mut deleted = Vec::new();
    for record in &records {
        store.revoke(record, "deleted", false).await?;
        if let Some(alias) = &record.key_alias {
            aliases::release(call.env, alias, &record.key_id).await?;
        }
        sync_ledger(call, record, Some("deleted")).await?;
        deleted.push(record.key_hash.clone());
    }
    deleted.dedup();
    Ok(json!({ "deleted_keys": deleted }))
}

/// `POST /key/regenerate` or `/key/{key}/regenerate`: a new secret for the same key (settings,
/// spend and identity kept); the old secret stops working. Other fields in the body are applied.
async fn regenerate(
    in_path: Option<&str>,
    body: &Map<String, Value>,
    store: &KeyStore,
    call: &Call<'_>,
) -> Result<Value, ApiError> {
    let ident = match in_path {
        Some(key) => key,
        None => body_key(body)?,
    };
    let old = find(ident, store).await?;
    let key = match body.get("new_key") {
        Some(v) => keys::chosen_key(v, "new_key")?,
        None => new_secret()?,
    };
    refuse_master_key(&key, "new_key", call)?;
    if store.get_fresh(&keys::hash_key(&key)).await?.is_some() {
        return Err(ApiError::invalid_request("A key with this secret already exists.", "new_key"));
    }
    let now = now_ms();
    let mut record = old.regenerated(&key, now);
    record.apply(keys::parse_changes(body, now)?, now);
    validate(&record, store, old.key_alias.as_deref(), call).await?;
    claim_alias(call, &record, old.key_alias.as_deref()).await?;
    let written = store.put(&record, old.key_alias.as_deref()).await;
    unclaim_on_error(call, &record, old.key_alias.as_deref(), written).await?;
    store.revoke(&old, "regenerated", record.key_alias == old.key_alias).await?;
    release_previous_alias(call, &record, old.key_alias.as_deref()).await?;
    sync_ledger(call, &record, None).await?;
    Ok(with_secret(view(&record, call).await?, &key))
}

async fn set_blocked(
    body: &Map<String, Value>,
    store: &KeyStore,
    call: &Call<'_>,
    blocked: bool,
) -> Result<Value, ApiError> {
    if let Some(field) = body.keys().find(|k| k.as_str() != "key") {
        return Err(ApiError::invalid_request(format!("Invalid `{field}`: unknown field"), field));
    }
    let mut record = find(body_key(body)?, store).await?;
    record.blocked = blocked;
    record.updated_at = now_ms();
    store.put(&record, record.key_alias.clone().as_deref()).await?;
    sync_ledger(call, &record, None).await?;
    view(&record, call).await
}

/// `GET /key/info?key=`: the master key may read any key; a virtual key only itself.
async fn info(req: &Request, store: &KeyStore, caller: &Caller, call: &Call<'_>) -> Result<Value, ApiError> {
    let asked = query(req, "key")?;
    let record = match (caller, asked) {
        (Caller::Master, Some(key)) => find(&key, store).await?,
        (Caller::Master, None) => return Err(ApiError::invalid_request("Give the key to look up as ?key=", "key")),
        (Caller::Key(own), None) => KeyRecord::clone(own),
        (Caller::Key(own), Some(key)) if keys::token_of(&key) == own.key_hash => KeyRecord::clone(own),
        (Caller::Key(_), Some(_)) => {
            return Err(ApiError::forbidden("A key may only read its own info; use the master key for others."))
        }
    };
    Ok(json!({ "key": record.key_hash, "info": view(&record, call).await? }))
}

/// `GET /key/list?page=&size=&key_alias=&user_id=&team_id=&return_full_object=`: hashes (never
/// secrets), newest first.
async fn list(req: &Request, store: &KeyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let (page, size) = (page_param(req, "page", 1, usize::MAX)?, page_param(req, "size", 10, MAX_PAGE_SIZE)?);
    let (alias, user, team) = (query(req, "key_alias")?, query(req, "user_id")?, query(req, "team_id")?);
    let full = query(req, "return_full_object")?.is_some_and(|v| v == "true");

    let mut entries = store.list().await?;
    entries.retain(|(_, m)| {
        alias.as_ref().is_none_or(|a| m.alias.as_ref() == Some(a))
            && user.as_ref().is_none_or(|u| m.user_id.as_ref() == Some(u))
            && team.as_ref().is_none_or(|t| m.team_id.as_ref() == Some(t))
    });
    entries.sort_by(|(ha, a), (hb, b)| b.created_at.cmp(&a.created_at).then(ha.cmp(hb)));
    let total = entries.len();
    let mut keys = Vec::new();
    for (hash, meta) in entries.into_iter().skip((page - 1).saturating_mul(size)).take(size) {
        if full {
            if let Some(record) = store.get_fresh(&hash).await? {
                keys.push(view(&record, call).await?);
            }
        } else {
            keys.push(json!({ "token": hash, "key_alias": meta.alias }));
        }
    }
    Ok(json!({
        "keys": keys,
        "total_count": total,
        "current_page": page,
        "total_pages": total.div_ceil(size),
    }))
}

/// Config checks, Workers KV's limits, and a first look at whether a new alias is taken
/// (the alias index also knows aliases set before they were claimed in Durable Objects).
async fn validate(
    record: &KeyRecord,
    store: &KeyStore,
    previous_alias: Option<&str>,
    call: &Call<'_>,
) -> Result<(), ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    record.validate(&config.model_names(), &config.access_groups)?;
    record.check_kv_limits()?;
    // A key's team must exist: its limits and budget bind the key. A user binds the key when
    // its record exists (LiteLLM also allows free user ids).
    if let Some(team) = &record.team_id {
        if PartyStore::open(call.env)?.get_fresh(PartyKind::Team, team).await?.is_none() {
            return Err(ApiError::invalid_request(
                format!("Invalid `team_id`: Team={team} does not exist (create it with /team/new)"),
                "team_id",
            ));
        }
    }
    if let Some(alias) = new_alias(record, previous_alias) {
        if store.hash_for_alias(alias).await?.is_some() {
            return Err(alias_taken(alias));
        }
    }
    Ok(())
}

/// The record's alias if the write gives it a new one.
fn new_alias<'a>(record: &'a KeyRecord, previous_alias: Option<&str>) -> Option<&'a str> {
    record.key_alias.as_deref().filter(|a| Some(*a) != previous_alias)
}

fn alias_taken(alias: &str) -> ApiError {
    ApiError::invalid_request(format!("Invalid `key_alias`: `{alias}` is already used by another key"), "key_alias")
}

/// Claims a new alias in its Durable Object before the key is written: of keys racing for one
/// alias, exactly one gets it.
async fn claim_alias(call: &Call<'_>, record: &KeyRecord, previous_alias: Option<&str>) -> Result<(), ApiError> {
    match new_alias(record, previous_alias) {
        Some(alias) if !aliases::claim(call.env, alias, &record.key_id).await? => Err(alias_taken(alias)),
        _ => Ok(()),
    }
}

/// A write that failed gives back the alias it had claimed, then reports its own error.
async fn unclaim_on_error(
    call: &Call<'_>,
    record: &KeyRecord,
    previous_alias: Option<&str>,
    written: Result<(), ApiError>,
) -> Result<(), ApiError> {
    if written.is_err() {
        if let Some(alias) = new_alias(record, previous_alias) {
            // The write's error is the one to report; a failed release is in the log already.
            let _ = aliases::release(call.env, alias, &record.key_id).await;
        }
    }
    written
}

/// Once the key is written under a new alias (or none), frees the one it had.
async fn release_previous_alias(
    call: &Call<'_>,
    record: &KeyRecord,
    previous_alias: Option<&str>,
) -> Result<(), ApiError> {
    match previous_alias.filter(|old| Some(*old) != record.key_alias.as_deref()) {
        Some(old) => aliases::release(call.env, old, &record.key_id).await,
        None => Ok(()),
    }
}

async fn find(ident: &str, store: &KeyStore) -> Result<KeyRecord, ApiError> {
    store
        .get_fresh(&keys::token_of(ident))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No such key: {}.", describe(ident))).with_param("key"))
}

fn body_key(body: &Map<String, Value>) -> Result<&str, ApiError> {
    body.get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::invalid_request("`key` (the key or its hash) is required", "key"))
}

/// How an error names a key: by hash or abbreviation, never the secret.
fn describe(ident: &str) -> String {
    if keys::is_hash(ident) {
        ident.to_string()
    } else {
        keys::abbreviate(ident)
    }
}

fn with_secret(mut view: Value, key: &str) -> Value {
    view["key"] = Value::String(key.to_string());
    view
}

/// The key as the API shows it, with the spend its ledger holds.
pub(super) async fn view(record: &KeyRecord, call: &Call<'_>) -> Result<Value, ApiError> {
    let ledger = LedgerStub::open(call.env, &messages::key_ledger(&record.key_id))?;
    let request = InfoRequest { limits: Limits::from_key(record) };
    let info = ledger.info(&request).await?;
    let mut view = record.to_api(info.spend, info.budget_reset_at);
    if !request.limits.model_budgets.is_empty() {
        view["model_max_budget_usage"] = info.model_budget_usage(&request.limits);
    }
    Ok(view)
}

/// Tells the key's ledger at once what KV will tell other locations within a minute: the key
/// is blocked, deleted, or has a new secret. Keys with limits are refused there immediately.
async fn sync_ledger(call: &Call<'_>, record: &KeyRecord, deleted: Option<&str>) -> Result<(), ApiError> {
    let reason = deleted.or(record.blocked.then_some("blocked"));
    let config = embedded::config().map_err(ApiError::internal)?;
    let scope = record.scope(&config.model_names(), &config.access_groups);
    accounting::notify_revocation(call.env, &record.key_id, reason, &record.key_hash, scope).await
}

fn new_secret() -> Result<String, ApiError> {
    keys::new_key().map_err(random_error)
}

fn random_error(e: getrandom::Error) -> ApiError {
    ApiError::internal(format!("no randomness available: {e}"))
}

fn refuse_master_key(key: &str, field: &str, call: &Call<'_>) -> Result<(), ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    if let Some(master) = &config.master_key {
        if vars::resolve(call.env, master).is_ok_and(|m| m.expose() == key) {
            return Err(ApiError::invalid_request(format!("Invalid `{field}`: must not be the master key"), field));
        }
    }
    Ok(())
}

/// A paging parameter: `default` when absent, else 1 to `max`.
pub(super) fn page_param(req: &Request, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
    match query(req, name)? {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid_request(format!("Invalid `{name}`: must be 1 to {max}"), name)),
    }
}

pub(super) fn query(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    Ok(endpoints::query_param(&req.inner().url(), name))
}
