//! LiteLLM's `/team/*`, `/user/*` and `/customer/*` APIs: master key only. Records live in KV
//! (`partystore`); spend comes from each party's ledger; a block, unblock or delete is told to
//! the party's ledger at once.

use serde_json::{json, Map, Value};
use worker::Request;

use super::accounting::{notify_party, party_spend};
use super::admin::{query, view as key_view};
use super::keystore::KeyStore;
use super::partystore::PartyStore;
use super::{now_ms, read_body, Call, Caller};
use crate::embedded;
use crate::ids;
use crate::keys::{self, MAX_ID};
use crate::openai::{parse_object, ApiError};
use crate::parties::{self, Member, PartyKind, PartyOp, PartyRecord};

const MAX_PAGE_SIZE: usize = 100;

pub async fn handle(
    kind: PartyKind,
    op: PartyOp,
    mut req: Request,
    call: &mut Call<'_>,
    caller: Caller,
) -> Result<Value, ApiError> {
    if !matches!(caller, Caller::Master) {
        super::drain(&mut req).await;
        return Err(ApiError::forbidden(format!("Only the master key may manage {}s.", kind.prefix())));
    }
    let store = PartyStore::open(call.env)?;
    match op {
        PartyOp::Info => return info(kind, &req, &store, call).await,
        PartyOp::List => return list(kind, &req, &store, call).await,
        _ => {}
    }
    let body = parse_object(&read_body(&mut req).await?)?;
    match op {
        PartyOp::New => create(kind, &body, &store, call).await,
        PartyOp::Update => update(kind, &body, &store, call).await,
        PartyOp::Delete => delete(kind, &body, &store, call).await,
        PartyOp::Block => set_blocked(kind, &body, &store, call, true).await,
        PartyOp::Unblock => set_blocked(kind, &body, &store, call, false).await,
        PartyOp::MemberAdd | PartyOp::MemberDelete => members(op, &body, &store, call).await,
        PartyOp::Info | PartyOp::List => unreachable!("answered above"),
    }
}

/// `POST /team/new`, `/user/new`, `/customer/new`. A team or user without an id gets one; a
/// customer's `user_id` is the `user` its requests send.
async fn create(
    kind: PartyKind,
    body: &Map<String, Value>,
    store: &PartyStore,
    call: &Call<'_>,
) -> Result<Value, ApiError> {
    let changes = parties::parse_changes(kind, body)?;
    let id = match parties::body_id(kind, body)? {
        Some(id) => id,
        None if kind == PartyKind::Customer => {
            return Err(ApiError::invalid_request("`user_id` (the end user's id) is required", "user_id"))
        }
        None => ids::uuid_v4().map_err(|e| ApiError::internal(format!("no randomness available: {e}")))?,
    };
    if store.get_fresh(kind, &id).await?.is_some() {
        let message = format!("{}={id} already exists.", kind.label());
        // LiteLLM answers a duplicate user with 409, a duplicate team or customer with 400.
        return Err(match kind {
            PartyKind::User => {
                ApiError::new(409, crate::openai::ErrorKind::InvalidRequest, message).with_param("user_id")
            }
            _ => ApiError::invalid_request(message, kind.id_field()),
        });
    }
    let now = now_ms();
    let mut record = PartyRecord::new(kind, id, now);
    record.apply(changes, now);
    validate(&record)?;
    // A party made again under a deleted one's id starts unrevoked.
    notify_party(call.env, kind, &record.id, record.blocked.then_some("blocked")).await?;
    store.put(kind, &record).await?;
    view(kind, &record, call).await
}

/// `POST /team/update`, `/user/update`, `/customer/update`: the fields given change.
async fn update(
    kind: PartyKind,
    body: &Map<String, Value>,
    store: &PartyStore,
    call: &Call<'_>,
) -> Result<Value, ApiError> {
    let mut record = find(kind, required_id(kind, body)?, store).await?;
    record.apply(parties::parse_changes(kind, body)?, now_ms());
    validate(&record)?;
    store.put(kind, &record).await?;
    if body.contains_key("blocked") {
        notify_party(call.env, kind, &record.id, record.blocked.then_some("blocked")).await?;
    }
    let shown = view(kind, &record, call).await?;
    Ok(match kind {
        PartyKind::Customer => shown,
        _ => json!({ kind.id_field(): record.id, "data": shown }),
    })
}

/// `POST /team/delete` (`team_ids`), `/user/delete` (`user_ids`), `/customer/delete`
/// (`user_ids`): nothing is deleted unless every one named exists. A deleted team's keys are
/// refused from then on.
async fn delete(
    kind: PartyKind,
    body: &Map<String, Value>,
    store: &PartyStore,
    call: &Call<'_>,
) -> Result<Value, ApiError> {
    let field = if kind == PartyKind::Team { "team_ids" } else { "user_ids" };
    let named = id_list(kind, body, field)?;
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for id in &named {
        match store.get_fresh(kind, id).await? {
            Some(r) => records.push(r),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        let message = format!("No such {}: {}. Nothing was deleted.", kind.prefix(), missing.join(", "));
        return Err(ApiError::not_found(message).with_param(field));
    }
    let mut shown = Vec::new();
    for record in &records {
        shown.push(view(kind, record, call).await?);
        notify_party(call.env, kind, &record.id, Some("deleted")).await?;
        store.delete(kind, &record.id).await?;
    }
    Ok(match kind {
        PartyKind::Team => Value::Array(shown),
        PartyKind::User => json!({ "deleted_users": shown }),
        PartyKind::Customer => json!({
            "deleted_customers": records.len(),
            "message": format!("Successfully deleted customers with ids: {named:?}"),
        }),
    })
}

/// `POST /team/block|unblock` (`team_id`), `/customer/block|unblock` (`user_ids`): the ledger
/// refuses at once; KV tells the other locations.
async fn set_blocked(
    kind: PartyKind,
    body: &Map<String, Value>,
    store: &PartyStore,
    call: &Call<'_>,
    blocked: bool,
) -> Result<Value, ApiError> {
    let ids = match kind {
        PartyKind::Customer => id_list(kind, body, "user_ids")?,
        _ => {
            if let Some(field) = body.keys().find(|k| k.as_str() != kind.id_field()) {
                return Err(ApiError::invalid_request(format!("Invalid `{field}`: unknown field"), field));
            }
            vec![required_id(kind, body)?.to_string()]
        }
    };
    let mut records = Vec::new();
    for id in &ids {
        records.push(find(kind, id, store).await?);
    }
    for record in &mut records {
        record.blocked = blocked;
        record.updated_at = now_ms();
        store.put(kind, record).await?;
        notify_party(call.env, kind, &record.id, blocked.then_some("blocked")).await?;
    }
    match kind {
        PartyKind::Customer => Ok(json!({ if blocked { "blocked_users" } else { "unblocked_users" }: ids })),
        _ => view(kind, &records[0], call).await,
    }
}

/// `POST /team/member_add` (`team_id`, `member`: one or a list) and `/team/member_delete`
/// (`team_id`, `user_id` or `user_email`).
async fn members(
    op: PartyOp,
    body: &Map<String, Value>,
    store: &PartyStore,
    call: &Call<'_>,
) -> Result<Value, ApiError> {
    let kind = PartyKind::Team;
    let allowed: &[&str] =
        if op == PartyOp::MemberAdd { &["team_id", "member"] } else { &["team_id", "user_id", "user_email"] };
    if let Some(field) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid_request(format!("Invalid `{field}`: unknown field"), field));
    }
    let mut record = find(kind, required_id(kind, body)?, store).await?;
    let now = now_ms();
    if op == PartyOp::MemberAdd {
        let members = match body.get("member") {
            Some(Value::Array(items)) if !items.is_empty() => {
                items.iter().map(|m| Member::parse(m, "member")).collect::<Result<Vec<_>, _>>()?
            }
            Some(m @ Value::Object(_)) => vec![Member::parse(m, "member")?],
            _ => return Err(ApiError::invalid_request("`member` (a member or a list of them) is required", "member")),
        };
        record.add_members(members, now);
    } else {
        let mut who = body.clone();
        who.remove("team_id");
        let gone = Member::parse(&Value::Object(who), "user_id")?;
        if !record.remove_member(&gone, now) {
            return Err(ApiError::not_found(format!("Team={} has no such member.", record.id)).with_param("user_id"));
        }
    }
    validate(&record)?;
    store.put(kind, &record).await?;
    view(kind, &record, call).await
}

/// `GET /team/info?team_id=`, `/user/info?user_id=`, `/customer/info?end_user_id=`.
async fn info(kind: PartyKind, req: &Request, store: &PartyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let param = if kind == PartyKind::Customer { "end_user_id" } else { kind.id_field() };
    let Some(id) = query(req, param)?.filter(|id| !id.is_empty()) else {
        return Err(ApiError::invalid_request(format!("Give the {} to look up as ?{param}=", kind.prefix()), param));
    };
    let record = find(kind, &id, store).await?;
    let shown = view(kind, &record, call).await?;
    match kind {
        PartyKind::Customer => Ok(shown),
        PartyKind::Team => {
            let keys = keys_of(call, |m| m.team_id.as_deref() == Some(&id)).await?;
            Ok(json!({ "team_id": id, "team_info": shown, "keys": keys }))
        }
        PartyKind::User => {
            let keys = keys_of(call, |m| m.user_id.as_deref() == Some(&id)).await?;
            let mut teams = Vec::new();
            for team in store.list(PartyKind::Team).await? {
                let member = team.members.iter().any(|m| m.user_id.as_deref() == Some(&id));
                let keyed = keys.iter().any(|k| k["team_id"].as_str() == Some(&team.id));
                if member || keyed {
                    teams.push(view(PartyKind::Team, &team, call).await?);
                }
            }
            Ok(json!({ "user_id": id, "user_info": shown, "keys": keys, "teams": teams }))
        }
    }
}

/// `GET /team/list` and `/customer/list` (arrays), `/user/list?page=&page_size=` (LiteLLM's page).
async fn list(kind: PartyKind, req: &Request, store: &PartyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let records = store.list(kind).await?;
    if kind != PartyKind::User {
        let mut shown = Vec::new();
        for record in &records {
            shown.push(view(kind, record, call).await?);
        }
        return Ok(Value::Array(shown));
    }
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match query(req, name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::invalid_request(format!("Invalid `{name}`: must be 1 to {max}"), name)),
        }
    };
    let (page, size) = (number("page", 1, usize::MAX)?, number("page_size", 25, MAX_PAGE_SIZE)?);
    let total = records.len();
    let mut users = Vec::new();
    for record in records.iter().skip((page - 1).saturating_mul(size)).take(size) {
        users.push(view(kind, record, call).await?);
    }
    Ok(json!({
        "users": users,
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": total.div_ceil(size),
    }))
}

/// The keys whose list metadata matches, as `/key/info` shows them.
async fn keys_of(call: &Call<'_>, matches: impl Fn(&keys::ListMeta) -> bool) -> Result<Vec<Value>, ApiError> {
    let store = KeyStore::open(call.env)?;
    let mut shown = Vec::new();
    for (hash, meta) in store.list().await? {
        if matches(&meta) {
            if let Some(record) = store.get_fresh(&hash).await? {
                shown.push(key_view(&record, call).await?);
            }
        }
    }
    Ok(shown)
}

fn validate(record: &PartyRecord) -> Result<(), ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    record.validate(&config.model_names())
}

/// The record as the API shows it, with its ledger's spend.
async fn view(kind: PartyKind, record: &PartyRecord, call: &Call<'_>) -> Result<Value, ApiError> {
    let info = party_spend(call.env, kind, record).await?;
    Ok(record.to_api(kind, info.spend, info.budget_reset_at))
}

async fn find(kind: PartyKind, id: &str, store: &PartyStore) -> Result<PartyRecord, ApiError> {
    store.get_fresh(kind, id).await?.ok_or_else(|| {
        ApiError::not_found(format!("{}={id} does not exist.", kind.label())).with_param(kind.id_field())
    })
}

fn required_id(kind: PartyKind, body: &Map<String, Value>) -> Result<&str, ApiError> {
    let field = kind.id_field();
    body.get(field)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::invalid_request(format!("`{field}` is required"), field))
}

/// A non-empty list of ids under `field`.
fn id_list(kind: PartyKind, body: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    if let Some(other) = body.keys().find(|k| k.as_str() != field) {
        return Err(ApiError::invalid_request(format!("Invalid `{other}`: unknown field"), other));
    }
    let bad = || ApiError::invalid_request(format!("`{field}` (a list of ids) is required"), field);
    let Some(Value::Array(items)) = body.get(field) else { return Err(bad()) };
    if items.is_empty() {
        return Err(bad());
    }
    items.iter().map(|v| keys::text(v, field, MAX_ID).and_then(|id| parties::check_id(kind, &id))).collect()
}
