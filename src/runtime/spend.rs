//! `GET /spend/logs`: each request's row, from the ledgers that keep them.

use futures_util::future::join_all;
use serde_json::Value;
use worker::Request;

use super::keystore::KeyStore;
use super::objects::ledger::LedgerStub;
use super::{Call, Caller};
use crate::endpoints;
use crate::keys;
use crate::ledger::messages::{self, LogsQuery, SpendLogRow};
use crate::openai::ApiError;
use crate::time;

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;
/// The most ledgers one unfiltered query reads (each read is a subrequest).
const MAX_LEDGERS: usize = 500;
const DAY_MS: u64 = 86_400_000;

/// Filters: `api_key` (a key or its hash), `request_id` (the answer's id or the call id),
/// `start_date` and `end_date` (`YYYY-MM-DD`, a whole day, or RFC 3339 times), `limit`.
/// The master key reads every ledger; a key reads only its own.
pub async fn logs(req: &Request, call: &Call<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let url = req.inner().url();
    let param = |name: &str| endpoints::query_param(&url, name).filter(|v| !v.is_empty());
    let query = LogsQuery {
        request_id: param("request_id"),
        start_ms: date(param("start_date"), "start_date", false)?,
        end_ms: date(param("end_date"), "end_date", true)?,
        limit: match param("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                ApiError::invalid_request(format!("Invalid `limit`: must be 1 to {MAX_LIMIT}"), "limit")
            })?,
        },
    };
    let asked_hash = param("api_key").map(|k| keys::token_of(&k));

    let ledgers: Vec<String> = match (caller, asked_hash) {
        (Caller::Key(own), None) => vec![messages::key_ledger(&own.key_id)],
        (Caller::Key(own), Some(hash)) if hash == own.key_hash => vec![messages::key_ledger(&own.key_id)],
        (Caller::Key(_), Some(_)) => {
            return Err(ApiError::forbidden("A key may only read its own spend logs; use the master key for others."))
        }
        (Caller::Master, Some(hash)) => {
            let record = KeyStore::open(call.env)?
                .get_fresh(&hash)
                .await?
                .ok_or_else(|| ApiError::not_found("No such key.").with_param("api_key"))?;
            vec![messages::key_ledger(&record.key_id)]
        }
        (Caller::Master, None) => {
            let keys = KeyStore::open(call.env)?.list().await?;
            let mut all: Vec<String> = keys
                .into_iter()
                .filter(|(_, m)| !m.key_id.is_empty())
                .map(|(_, m)| messages::key_ledger(&m.key_id))
                .collect();
            all.truncate(MAX_LEDGERS);
            all
        }
    };

    let reads = ledgers.iter().map(|name| async {
        let stub = LedgerStub::open(call.env, name)?;
        stub.logs(&query).await
    });
    let mut rows: Vec<SpendLogRow> = Vec::new();
    for result in join_all(reads).await {
        rows.extend(result?);
    }
    rows.sort_by(|a, b| b.start_time.cmp(&a.start_time).then_with(|| a.call_id.cmp(&b.call_id)));
    rows.truncate(query.limit as usize);
    Ok(Value::Array(rows.iter().map(SpendLogRow::to_api).collect()))
}

/// A date filter: RFC 3339, or `YYYY-MM-DD` meaning the start (or, for an end, the whole) day.
fn date(value: Option<String>, field: &str, end: bool) -> Result<Option<u64>, ApiError> {
    let Some(text) = value else { return Ok(None) };
    let ms = time::parse_rfc3339(&text).ok_or_else(|| {
        ApiError::invalid_request(format!("Invalid `{field}`: use YYYY-MM-DD or an RFC 3339 time"), field)
    })?;
    Ok(Some(if end && text.trim().len() == 10 { ms + DAY_MS - 1 } else { ms }))
}
