//! LiteLLM's `/team/*`, `/user/*` and `/customer/*` APIs: master key only. Records live in KV
//! (`partystore`); spend comes from each party's ledger; a block, unblock or delete is told to
//! the party's ledger at once.

use serde_json::{json, Value};
use worker::Request;

use super::accounting::{notify_party, party_spend};
use super::admin::{page_param, query, view as key_view};
use super::keystore::KeyStore;
use super::partystore::PartyStore;
use super::{now_ms, read_body, Call, Caller};
use crate::embedded;
use crate::openai::{parse_object, ApiError};
use crate::parties::{self, PartyKind, PartyOp, PartyRecord};

const MAX_PAGE_SIZE: usize = 100;

pub async fn handle(
    kind: PartyKind,
    op: PartyOp,
    req: Request,
    call: &mut Call<'_>,
    caller: Caller,
) -> Result<Value, ApiError> {
    if !matches!(caller, Caller::Master) {
        super::drain(req.inner()).await;
        return Err(ApiError::forbidden(format!("Only the master key may manage {}s.", kind.prefix())));
    }
    let store = PartyStore::open(call.env)?;
    match op {
        PartyOp::Info => return info(kind, &req, &store, call).await,
        PartyOp::List => return list(kind, &req, &store, call).await,
        _ => {}
    }
    let body = parse_object(&read_body(req.inner()).await?)?;
    let ids = parties::target_ids(kind, op, &body)?;
    if op == PartyOp::Delete {
        return delete(kind, &ids, &store, call).await;
    }
    // Every record is read and edited before any is written: one bad id changes nothing.
    let now = now_ms();
    let mut records = Vec::new();
    for id in &ids {
        let record = parties::edit(kind, op, store.get_fresh(kind, id).await?, id, &body, now)?;
        validate(&record)?;
        records.push(record);
    }
    for record in &records {
        // A block or unblock reaches the ledger at once; a party made again under a deleted
        // one's id starts unrevoked.
        if op == PartyOp::New || body.contains_key("blocked") || matches!(op, PartyOp::Block | PartyOp::Unblock) {
            notify_party(call.env, kind, &record.id, record.blocked.then_some("blocked")).await?;
        }
        store.put(kind, record).await?;
    }
    match (kind, op) {
        (PartyKind::Customer, PartyOp::Block) => Ok(json!({ "blocked_users": ids })),
        (PartyKind::Customer, PartyOp::Unblock) => Ok(json!({ "unblocked_users": ids })),
        _ => {
            let shown = views(kind, &records[..1], call).await?.pop().unwrap_or_default();
            Ok(match (kind, op) {
                (PartyKind::Team | PartyKind::User, PartyOp::Update) => {
                    json!({ kind.id_field(): ids[0], "data": shown })
                }
                _ => shown,
            })
        }
    }
}

/// `POST /team/delete` (`team_ids`), `/user/delete` (`user_ids`), `/customer/delete`
/// (`user_ids`): nothing is deleted unless every one named exists. A deleted team's keys are
/// refused from then on.
async fn delete(kind: PartyKind, ids: &[String], store: &PartyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match store.get_fresh(kind, id).await? {
            Some(r) => records.push(r),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        let field = if kind == PartyKind::Team { "team_ids" } else { "user_ids" };
        let message = format!("No such {}: {}. Nothing was deleted.", kind.prefix(), missing.join(", "));
        return Err(ApiError::not_found(message).with_param(field));
    }
    let shown = views(kind, &records, call).await?;
    for record in &records {
        notify_party(call.env, kind, &record.id, Some("deleted")).await?;
        store.delete(kind, &record.id).await?;
    }
    Ok(match kind {
        PartyKind::Team => Value::Array(shown),
        PartyKind::User => json!({ "deleted_users": shown }),
        PartyKind::Customer => json!({
            "deleted_customers": records.len(),
            "message": format!("Successfully deleted customers with ids: {ids:?}"),
        }),
    })
}

/// `GET /team/info?team_id=` (`{team_id, team_info, keys}`), `/user/info?user_id=`
/// (`{user_id, user_info, keys, teams}`), `/customer/info?end_user_id=` (the customer).
async fn info(kind: PartyKind, req: &Request, store: &PartyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let param = if kind == PartyKind::Customer { "end_user_id" } else { kind.id_field() };
    let Some(id) = query(req, param)?.filter(|id| !id.is_empty()) else {
        return Err(ApiError::invalid_request(format!("Give the {} to look up as ?{param}=", kind.prefix()), param));
    };
    let record = store.get_fresh(kind, &id).await?.ok_or_else(|| {
        ApiError::not_found(format!("{}={id} does not exist.", kind.label())).with_param(kind.id_field())
    })?;
    let shown = views(kind, std::slice::from_ref(&record), call).await?.pop().unwrap_or_default();
    if kind == PartyKind::Customer {
        return Ok(shown);
    }
    let keys = keys_of(call, kind, &id).await?;
    if kind == PartyKind::Team {
        return Ok(json!({ "team_id": id, "team_info": shown, "keys": keys }));
    }
    // The user's teams: those it is a member of, and those of its keys.
    let mut teams = store.list(PartyKind::Team).await?;
    teams.retain(|team| {
        team.members.iter().any(|m| m.user_id.as_deref() == Some(&id))
            || keys.iter().any(|k| k["team_id"].as_str() == Some(&team.id))
    });
    let teams = views(PartyKind::Team, &teams, call).await?;
    Ok(json!({ "user_id": id, "user_info": shown, "keys": keys, "teams": teams }))
}

/// `GET /team/list` and `/customer/list` (arrays), `/user/list?page=&page_size=` (LiteLLM's page).
async fn list(kind: PartyKind, req: &Request, store: &PartyStore, call: &Call<'_>) -> Result<Value, ApiError> {
    let mut records = store.list(kind).await?;
    if kind != PartyKind::User {
        return views(kind, &records, call).await.map(Value::Array);
    }
    let (page, size) = (page_param(req, "page", 1, usize::MAX)?, page_param(req, "page_size", 25, MAX_PAGE_SIZE)?);
    let total = records.len();
    records.drain(..(page - 1).saturating_mul(size).min(total));
    records.truncate(size);
    let users = views(kind, &records, call).await?;
    Ok(json!({
        "users": users,
        "total": total,
        "page": page,
        "page_size": size,
        "total_pages": total.div_ceil(size),
    }))
}

/// The keys of a team or user (by their list metadata), as `/key/info` shows them.
async fn keys_of(call: &Call<'_>, kind: PartyKind, id: &str) -> Result<Vec<Value>, ApiError> {
    let store = KeyStore::open(call.env)?;
    let mut shown = Vec::new();
    for (hash, meta) in store.list().await? {
        let owner = if kind == PartyKind::Team { &meta.team_id } else { &meta.user_id };
        if owner.as_deref() != Some(id) {
            continue;
        }
        if let Some(record) = store.get_fresh(&hash).await? {
            shown.push(key_view(&record, call).await?);
        }
    }
    Ok(shown)
}

fn validate(record: &PartyRecord) -> Result<(), ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    record.validate(&config.model_names(), &config.access_groups)
}

/// The records as the API shows them, each with its ledger's spend.
async fn views(kind: PartyKind, records: &[PartyRecord], call: &Call<'_>) -> Result<Vec<Value>, ApiError> {
    let mut shown = Vec::with_capacity(records.len());
    for record in records {
        let info = party_spend(call.env, kind, record).await?;
        shown.push(record.to_api(kind, info.spend, info.budget_reset_at));
    }
    Ok(shown)
}
