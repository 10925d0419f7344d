//! The `Reports` Durable Object: the whole gateway's spend aggregates, in SQLite. One object
//! (`global`) takes every isolate's batches of events (`reports::record`) and answers the
//! report endpoints and `/metrics`.
//!
//! Each batch is applied in one synchronous run (no `await`), so its writes commit together:
//! a batch is counted whole or not at all. A call id already applied is skipped, so a batch
//! sent again after a lost answer counts nothing twice; applied ids are kept
//! `APPLIED_RETENTION_MS`, far longer than any retry.
//!
//! Spend is pico-dollars in 64-bit integers; it crosses to JavaScript as decimal text (a JS
//! number holds integers exactly only to 2^53 pico-dollars, about $9,000).

use std::cell::Cell;

use serde_json::{json, Value};
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State};

use super::ObjectStub;
use crate::metrics::{self, LatencyRow, Snapshot, TotalsRow};
use crate::money::Money;
use crate::openai::ApiError;
use crate::reports::{self, GroupBy, GroupRow, Ranked, Ranking, ReportEvent};
use crate::runtime::now_ms;

const BINDING: &str = "REPORTS";
const OBJECT_NAME: &str = "global";
/// How long an applied call id is remembered (a retried batch comes within seconds).
const APPLIED_RETENTION_MS: u64 = 3 * reports::DAY_MS;
/// Per-day rows and tag counts are kept this long (a report over the past year and a bit).
const DAILY_RETENTION_MS: u64 = 400 * reports::DAY_MS;
/// Retention runs at most this often.
const PRUNE_EVERY_MS: u64 = 3_600_000;

const DIMENSIONS: &str = "api_key, team_id, user_id, end_user, model_group, deployment";
const COLUMNS: &str = "api_key, team_id, user_id, end_user, model_group, deployment, key_alias, requests, failures, \
     prompt_tokens, completion_tokens, spend, latency_ms";
/// The values of an upsert of `COLUMNS` (spend arrives as text: see the module's note).
const MARKS: &str = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS INTEGER), ?";
/// What an upsert adds to the row it meets.
const ADD_COUNTS: &str = "requests = requests + excluded.requests, failures = failures + excluded.failures, \
     prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
     completion_tokens = completion_tokens + excluded.completion_tokens, spend = spend + excluded.spend, \
     latency_ms = latency_ms + excluded.latency_ms, \
     key_alias = CASE WHEN excluded.key_alias != '' THEN excluded.key_alias ELSE key_alias END";

/// The most call ids one statement records (two values each: a Durable Object's SQL binds at
/// most 100).
const MAX_IDS_PER_STATEMENT: usize = 45;

/// A batch's events summed for one row: what its upsert adds. The row's dimensions are its
/// first event's.
struct RowSums<'e> {
    first: &'e ReportEvent,
    /// Empty for the all-time totals.
    day: &'e str,
    /// The last alias the batch's events named (an empty one leaves the row's as it is).
    key_alias: &'e str,
    requests: u64,
    failures: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    spend: Money,
    latency_ms: u64,
}

/// Adds `e` to its row in `rows` (of `day`), or to a new one.
fn sum_into<'e>(rows: &mut Vec<RowSums<'e>>, e: &'e ReportEvent, day: &'e str) {
    let f = |r: &RowSums| {
        let a = r.first;
        r.day == day
            && a.api_key == e.api_key
            && a.team_id == e.team_id
            && a.user_id == e.user_id
            && a.end_user == e.end_user
            && a.model_group == e.model_group
            && a.deployment == e.deployment
    };
    let at = match rows.iter().position(f) {
        Some(at) => at,
        None => {
            rows.push(RowSums {
                first: e,
                day,
                key_alias: "",
                requests: 0,
                failures: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                spend: Money::ZERO,
                latency_ms: 0,
            });
            rows.len() - 1
        }
    };
    let r = &mut rows[at];
    if !e.key_alias.is_empty() {
        r.key_alias = &e.key_alias;
    }
    r.requests += 1;
    r.failures += u64::from(e.failed());
    r.prompt_tokens = r.prompt_tokens.saturating_add(e.prompt_tokens);
    r.completion_tokens = r.completion_tokens.saturating_add(e.completion_tokens);
    r.spend = r.spend.saturating_add(e.spend);
    r.latency_ms = r.latency_ms.saturating_add(e.latency_ms);
}

/// `n` copies of `mark`, comma-separated.
fn marks(mark: &str, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(mark);
    }
    out
}

#[durable_object(fetch)]
pub struct Reports {
    state: State,
    schema_ready: Cell<bool>,
    pruned_at: Cell<u64>,
}

impl DurableObject for Reports {
    fn new(state: State, _env: Env) -> Self {
        Reports { state, schema_ready: Cell::new(false), pruned_at: Cell::new(0) }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let body = req.bytes().await?;
        let answer = serde_json::from_slice::<Value>(&body)
            .map_err(|e| format!("bad reports request: {e}"))
            .and_then(|request| self.handle(&path, &request));
        match answer {
            // JSON, without a content-type: only the gateway's own stub reads it.
            Ok(answer) => Response::from_bytes(crate::json::to_vec(&answer)),
            Err(message) => Response::error(message, 400),
        }
    }
}

fn sql_error(e: worker::Error) -> String {
    format!("reports storage failed: {e}")
}

fn text(s: &str) -> SqlStorageValue {
    s.to_string().into()
}

fn int(n: u64) -> SqlStorageValue {
    (n.min(i64::MAX as u64) as i64).into()
}

/// A column read back: text as is, numbers as decimal text.
fn as_text(v: Option<&SqlStorageValue>) -> String {
    match v {
        Some(SqlStorageValue::String(s)) => s.clone(),
        Some(SqlStorageValue::Integer(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A count or an amount read back (amounts are selected as text, counts may be either).
fn as_u64(v: Option<&SqlStorageValue>) -> u64 {
    match v {
        Some(SqlStorageValue::Integer(n)) => u64::try_from(*n).unwrap_or(0),
        Some(SqlStorageValue::String(s)) => s.parse().unwrap_or(0),
        Some(SqlStorageValue::Float(f)) if *f >= 0.0 => *f as u64,
        _ => 0,
    }
}

/// Every row of a query, as raw values.
fn select(sql: &SqlStorage, query: &str, values: Vec<SqlStorageValue>) -> Result<Vec<Vec<SqlStorageValue>>, String> {
    let mut rows = Vec::new();
    for row in sql.exec(query, values).map_err(sql_error)?.raw() {
        rows.push(row.map_err(sql_error)?);
    }
    Ok(rows)
}

/// The `WHERE` of a report: its day range (`start`, `end`, both included) and its key, end
/// user, team or internal user, as the request names them.
fn filters(request: &Value) -> (String, Vec<SqlStorageValue>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let fields = [
        ("start", "day >= ?"),
        ("end", "day <= ?"),
        ("api_key", "api_key = ?"),
        ("end_user", "end_user = ?"),
        ("team_id", "team_id = ?"),
        ("user_id", "user_id = ?"),
    ];
    for (field, clause) in fields {
        if let Some(v) = request.get(field).and_then(Value::as_str) {
            clauses.push(clause);
            values.push(text(v));
        }
    }
    let clause = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    (clause, values)
}

fn limit(request: &Value) -> i64 {
    request.get("limit").and_then(Value::as_i64).unwrap_or(-1)
}

impl Reports {
    /// One call, start to end without awaiting.
    fn handle(&self, path: &str, request: &Value) -> Result<Value, String> {
        let sql = self.state.storage().sql();
        self.ensure_schema(&sql)?;
        match path {
            "/record" => {
                let batch = request.as_array().ok_or("bad reports request: not a batch")?;
                let mut events = Vec::with_capacity(batch.len());
                for event in batch {
                    events.push(ReportEvent::decode(event).ok_or("bad reports request: an unreadable event")?);
                }
                Ok(json!({ "applied": self.record(&sql, &events)? }))
            }
            "/report" => report(&sql, request),
            "/keys" | "/models" | "/tags" => ranked(&sql, path, request),
            "/metrics" => metrics_text(&sql, request),
            "/end-user-spend" => {
                let (clause, values) = filters(request);
                let rows =
                    select(&sql, &format!("SELECT CAST(COALESCE(SUM(spend), 0) AS TEXT) FROM daily{clause}"), values)?;
                Ok(json!({ "spend": as_text(rows.first().and_then(|r| r.first())) }))
            }
            _ => Err(format!("unknown reports call {path}")),
        }
    }

    fn ensure_schema(&self, sql: &SqlStorage) -> Result<(), String> {
        if self.schema_ready.get() {
            return Ok(());
        }
        let counts = "requests INTEGER NOT NULL, failures INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, \
             completion_tokens INTEGER NOT NULL, spend INTEGER NOT NULL, latency_ms INTEGER NOT NULL";
        let dims = "api_key TEXT NOT NULL, team_id TEXT NOT NULL, user_id TEXT NOT NULL, end_user TEXT NOT NULL, \
             model_group TEXT NOT NULL, deployment TEXT NOT NULL, key_alias TEXT NOT NULL";
        for statement in [
            format!("CREATE TABLE IF NOT EXISTS daily (day TEXT NOT NULL, {dims}, {counts}, PRIMARY KEY (day, {DIMENSIONS})) WITHOUT ROWID"),
            format!("CREATE TABLE IF NOT EXISTS totals ({dims}, {counts}, PRIMARY KEY ({DIMENSIONS})) WITHOUT ROWID"),
            "CREATE TABLE IF NOT EXISTS tags (day TEXT NOT NULL, api_key TEXT NOT NULL, tag TEXT NOT NULL, \
             requests INTEGER NOT NULL, spend INTEGER NOT NULL, PRIMARY KEY (day, api_key, tag)) WITHOUT ROWID"
                .into(),
            "CREATE TABLE IF NOT EXISTS latency (model_group TEXT NOT NULL, bucket INTEGER NOT NULL, \
             count INTEGER NOT NULL, PRIMARY KEY (model_group, bucket)) WITHOUT ROWID"
                .into(),
            "CREATE TABLE IF NOT EXISTS applied (call_id TEXT PRIMARY KEY, at INTEGER NOT NULL)".into(),
            "CREATE INDEX IF NOT EXISTS applied_by_time ON applied (at)".into(),
        ] {
            sql.exec(&statement, None).map_err(sql_error)?;
        }
        self.schema_ready.set(true);
        Ok(())
    }

    /// Applies the events not applied before; returns how many were new. The batch's events
    /// are summed per row first (`BatchSums`): a batch of hundreds of requests with the same
    /// key and model makes a few upserts, not five statements per request.
    fn record(&self, sql: &SqlStorage, events: &[ReportEvent]) -> Result<usize, String> {
        let now = now_ms();
        // Each call id once: the insert answers the ids it added, so an id applied before, or
        // repeated within the batch, is skipped.
        let mut fresh: Vec<&ReportEvent> = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_IDS_PER_STATEMENT) {
            let mut values = Vec::with_capacity(2 * chunk.len());
            for e in chunk {
                values.push(text(&e.call_id));
                values.push(int(now));
            }
            let query = format!(
                "INSERT INTO applied (call_id, at) VALUES {} ON CONFLICT (call_id) DO NOTHING RETURNING call_id",
                marks("(?, ?)", chunk.len())
            );
            let mut added = select(sql, &query, values)?;
            for e in chunk {
                if let Some(at) = added.iter().position(|row| as_text(row.first()) == e.call_id) {
                    added.swap_remove(at);
                    fresh.push(e);
                }
            }
        }
        self.apply(sql, &fresh)?;
        let applied = fresh.len();
        if now.saturating_sub(self.pruned_at.get()) >= PRUNE_EVERY_MS {
            self.pruned_at.set(now);
            sql.exec("DELETE FROM applied WHERE at < ?", vec![int(now.saturating_sub(APPLIED_RETENTION_MS))])
                .map_err(sql_error)?;
            let oldest_day = reports::day_of(now.saturating_sub(DAILY_RETENTION_MS));
            sql.exec("DELETE FROM daily WHERE day < ?", vec![text(&oldest_day)]).map_err(sql_error)?;
            sql.exec("DELETE FROM tags WHERE day < ?", vec![text(&oldest_day)]).map_err(sql_error)?;
        }
        Ok(applied)
    }

    /// Adds a batch's events to their days' rows, the all-time totals, their tags and their
    /// latency buckets, summed first: one upsert per row, leaving the tables as applying the
    /// events one by one would.
    fn apply(&self, sql: &SqlStorage, events: &[&ReportEvent]) -> Result<(), String> {
        let mut days = Vec::with_capacity(events.len());
        for e in events {
            days.push(e.day());
        }
        let mut rows: Vec<RowSums> = Vec::new();
        let mut totals: Vec<RowSums> = Vec::new();
        // (day, api_key, tag, requests, spend), (model_group, bucket, requests)
        let mut tags: Vec<(&str, &str, &str, u64, Money)> = Vec::new();
        let mut latency: Vec<(&str, u64, u64)> = Vec::new();
        for (e, day) in events.iter().zip(&days) {
            sum_into(&mut rows, e, day);
            sum_into(&mut totals, e, "");
            for tag in e.distinct_tags() {
                match tags.iter_mut().find(|t| t.0 == day && t.1 == e.api_key && t.2 == tag) {
                    Some(t) => {
                        t.3 += 1;
                        t.4 = t.4.saturating_add(e.spend);
                    }
                    None => tags.push((day, &e.api_key, tag, 1, e.spend)),
                }
            }
            let bucket = reports::latency_bucket(e.latency_ms) as u64;
            match latency.iter_mut().find(|l| l.0 == e.model_group && l.1 == bucket) {
                Some(l) => l.2 += 1,
                None => latency.push((&e.model_group, bucket, 1)),
            }
        }
        let daily = format!(
            "INSERT INTO daily (day, {COLUMNS}) VALUES (?, {MARKS}) ON CONFLICT (day, {DIMENSIONS}) DO UPDATE SET {ADD_COUNTS}"
        );
        let all_time = format!(
            "INSERT INTO totals ({COLUMNS}) VALUES ({MARKS}) ON CONFLICT ({DIMENSIONS}) DO UPDATE SET {ADD_COUNTS}"
        );
        for (query, row) in rows.iter().map(|r| (&daily, r)).chain(totals.iter().map(|r| (&all_time, r))) {
            let mut v = Vec::with_capacity(14);
            if !row.day.is_empty() {
                v.push(text(row.day));
            }
            let e = row.first;
            for s in [&e.api_key, &e.team_id, &e.user_id, &e.end_user, &e.model_group, &e.deployment] {
                v.push(text(s));
            }
            v.push(text(row.key_alias));
            v.extend([int(row.requests), int(row.failures), int(row.prompt_tokens), int(row.completion_tokens)]);
            v.extend([text(&row.spend.pico().to_string()), int(row.latency_ms)]);
            sql.exec(query, v).map_err(sql_error)?;
        }
        for (day, api_key, tag, requests, spend) in tags {
            sql.exec(
                "INSERT INTO tags (day, api_key, tag, requests, spend) VALUES (?, ?, ?, ?, CAST(? AS INTEGER)) \
                 ON CONFLICT (day, api_key, tag) DO UPDATE SET requests = requests + excluded.requests, \
                 spend = spend + excluded.spend",
                vec![text(day), text(api_key), text(tag), int(requests), text(&spend.pico().to_string())],
            )
            .map_err(sql_error)?;
        }
        for (model_group, bucket, count) in latency {
            sql.exec(
                "INSERT INTO latency (model_group, bucket, count) VALUES (?, ?, ?) \
                 ON CONFLICT (model_group, bucket) DO UPDATE SET count = count + excluded.count",
                vec![text(model_group), int(bucket), int(count)],
            )
            .map_err(sql_error)?;
        }
        Ok(())
    }
}

/// `/global/spend/report`, grouped and ordered by SQL, shaped by `reports::spend_report`.
fn report(sql: &SqlStorage, request: &Value) -> Result<Value, String> {
    let group_by = request.get("group_by").and_then(Value::as_str).and_then(GroupBy::parse).unwrap_or(GroupBy::Team);
    let (clause, values) = filters(request);
    let sums = "CAST(SUM(spend) AS TEXT), SUM(prompt_tokens), SUM(completion_tokens)";
    let query = match group_by {
        GroupBy::Team | GroupBy::Customer => {
            let group = if group_by == GroupBy::Team { "team_id" } else { "end_user" };
            format!(
                "SELECT day, {group}, model_group, api_key, {sums} FROM daily{clause} \
                 GROUP BY day, {group}, model_group, api_key ORDER BY day, {group}, model_group, api_key"
            )
        }
        GroupBy::ApiKey => format!(
            "SELECT '', '', model_group, api_key, {sums} FROM daily{clause} GROUP BY api_key, model_group \
             ORDER BY SUM(SUM(spend)) OVER (PARTITION BY api_key) DESC, api_key, model_group"
        ),
    };
    let mut rows = Vec::new();
    for r in select(sql, &query, values)? {
        rows.push(GroupRow {
            day: as_text(r.first()),
            group: as_text(r.get(1)),
            model: as_text(r.get(2)),
            api_key: as_text(r.get(3)),
            spend: as_u64(r.get(4)),
            prompt_tokens: as_u64(r.get(5)),
            completion_tokens: as_u64(r.get(6)),
        });
    }
    Ok(reports::spend_report(&rows, group_by))
}

/// `/global/spend/keys`, `/global/spend/models` and `/spend/tags`: names ranked by spend.
fn ranked(sql: &SqlStorage, path: &str, request: &Value) -> Result<Value, String> {
    let (clause, mut values) = filters(request);
    let (query, ranking) = match path {
        "/keys" => (
            format!(
                "SELECT api_key, MAX(key_alias), SUM(requests), CAST(SUM(spend) AS TEXT) FROM daily{clause} \
                 GROUP BY api_key ORDER BY SUM(spend) DESC, api_key LIMIT ?"
            ),
            Ranking::Keys,
        ),
        "/models" => (
            format!(
                "SELECT model_group, '', SUM(requests), CAST(SUM(spend) AS TEXT) FROM daily{clause} \
                 GROUP BY model_group ORDER BY SUM(spend) DESC, model_group LIMIT ?"
            ),
            Ranking::Models,
        ),
        _ => (
            format!(
                "SELECT tag, '', SUM(requests), CAST(SUM(spend) AS TEXT) FROM tags{clause} \
                 GROUP BY tag ORDER BY SUM(spend) DESC, tag LIMIT ?"
            ),
            Ranking::Tags,
        ),
    };
    values.push(limit(request).into());
    let mut rows = Vec::new();
    for r in select(sql, &query, values)? {
        rows.push(Ranked {
            name: as_text(r.first()),
            detail: as_text(r.get(1)),
            count: as_u64(r.get(2)),
            spend: as_u64(r.get(3)),
        });
    }
    Ok(reports::ranked(&rows, ranking))
}

/// The request series of `/metrics` from the all-time totals and latency buckets, in
/// Prometheus text. `request.models` maps deployment ids to their `litellm_params.model`.
fn metrics_text(sql: &SqlStorage, request: &Value) -> Result<Value, String> {
    let mut totals = Vec::new();
    let query = "SELECT api_key, key_alias, team_id, user_id, end_user, model_group, deployment, requests, failures, \
         prompt_tokens, completion_tokens, CAST(spend AS TEXT), latency_ms FROM totals \
         ORDER BY model_group, api_key, team_id, user_id, end_user, deployment";
    for r in select(sql, query, Vec::new())? {
        let t = |i: usize| as_text(r.get(i));
        let n = |i: usize| as_u64(r.get(i));
        totals.push(TotalsRow {
            api_key: t(0),
            key_alias: t(1),
            team_id: t(2),
            user_id: t(3),
            end_user: t(4),
            model_group: t(5),
            deployment: t(6),
            requests: n(7),
            failures: n(8),
            prompt_tokens: n(9),
            completion_tokens: n(10),
            spend: n(11),
            latency_ms: n(12),
        });
    }
    let mut latency = Vec::new();
    for r in select(sql, "SELECT model_group, bucket, count FROM latency ORDER BY model_group, bucket", Vec::new())? {
        latency.push(LatencyRow {
            model_group: as_text(r.first()),
            bucket: as_u64(r.get(1)) as usize,
            count: as_u64(r.get(2)),
        });
    }
    let mut models = Vec::new();
    for pair in request.get("models").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
        if let (Some(id), Some(model)) = (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) {
            models.push((id.to_string(), model.to_string()));
        }
    }
    Ok(Value::String(metrics::render(&Snapshot { totals: &totals, latency: &latency, models: &models })))
}

/// The worker's handle on the reports object. Requests and answers are JSON values (no
/// derived types: see `reports`).
pub struct ReportsStub {
    object: ObjectStub,
}

impl ReportsStub {
    pub fn open(env: &Env) -> Result<Self, ApiError> {
        Ok(ReportsStub { object: ObjectStub::open(env, BINDING, OBJECT_NAME)? })
    }

    /// Applies a batch of events (idempotent by call id); how many were new.
    pub async fn record(&self, events: &[ReportEvent]) -> Result<u64, ApiError> {
        let batch = Value::Array(events.iter().map(ReportEvent::encode).collect());
        let answer: Value = self.object.call("/record", &batch).await?;
        Ok(answer.get("applied").and_then(Value::as_u64).unwrap_or(0))
    }

    /// A report (`/report`, `/keys`, `/models`, `/tags`) in its API shape. `request` holds the
    /// filters: `start` and `end` days, `api_key`, `end_user`, `group_by`, `limit`.
    pub async fn report(&self, path: &str, request: &Value) -> Result<Value, ApiError> {
        self.object.call(path, request).await
    }

    /// The request series of `/metrics` (Prometheus text); `models` maps deployment ids to
    /// their `litellm_params.model`.
    pub async fn metrics(&self, models: &[(String, String)]) -> Result<String, ApiError> {
        let mut pairs = Vec::with_capacity(models.len());
        for (id, model) in models {
            pairs.push(json!([id, model]));
        }
        let answer: Value = self.object.call("/metrics", &json!({ "models": pairs })).await?;
        Ok(answer.as_str().unwrap_or_default().to_string())
    }

    /// An end user's spend over a day range (`YYYY-MM-DD`, both included; `None`: no bound),
    /// for a customer's budget or `/customer/info`. As fresh as the last batch applied.
    #[allow(dead_code)]
    pub async fn end_user_spend(
        &self,
        end_user: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<Money, ApiError> {
        let request = json!({"end_user": end_user, "start": start, "end": end});
        let answer: Value = self.object.call("/end-user-spend", &request).await?;
        let spend = answer.get("spend").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok(Money::from_pico(spend))
    }
}
