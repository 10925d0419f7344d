//! The ledger Durable Object and the worker's stub for it.
//!
//! The object holds one [`LedgerState`] (as JSON in its SQLite storage) and a spend log table.
//! Each call loads the state, applies one pure rule from `ledger`, and saves it, with no
//! `await` in between: the object handles one call at a time, so admission is exact however
//! many requests race. It holds no rule of its own.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use super::ObjectStub;
use crate::fields::FromJson;
use crate::json::{self, ObjectWriter, ToJson};
use crate::ledger::messages::{
    InfoRequest, LedgerInfo, LogsQuery, ReleaseRequest, RevokeRequest, SettleRequest, SpendLogRow,
};
use crate::ledger::{AdmitRequest, Decision, Entry, LedgerState, Settled};
use crate::money::Money;
use crate::openai::ApiError;
use crate::runtime::now_ms;

const BINDING: &str = "LEDGER";
/// Spend log rows are kept this long, and at most this many per ledger.
const LOG_RETENTION_MS: u64 = 30 * 86_400_000;
const LOG_MAX_ROWS: u64 = 10_000;
/// Retention runs every this many inserts.
const RETENTION_EVERY: u32 = 256;

#[durable_object(fetch)]
pub struct Ledger {
    state: State,
    cached: RefCell<Option<LedgerState>>,
    /// The totals row as last written: a call that leaves it unchanged (most admissions) does
    /// not write it again.
    saved_totals: RefCell<String>,
    schema_ready: Cell<bool>,
    inserts: Cell<u32>,
}

impl DurableObject for Ledger {
    fn new(state: State, _env: Env) -> Self {
        Ledger {
            state,
            cached: RefCell::new(None),
            saved_totals: RefCell::new(String::new()),
            schema_ready: Cell::new(false),
            inserts: Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let body = req.bytes().await?;
        match self.handle(&path, &body) {
            // JSON, without a content-type: only the gateway's own stub reads it.
            Ok(answer) => Response::from_bytes(answer.into_bytes()),
            Err(message) => Response::error(message, 400),
        }
    }
}

#[derive(Deserialize)]
struct JsonRow {
    json: String,
}

/// The ledger's scalars, saved as one row; its entries are rows of their own. Written and
/// read by hand (below).
#[derive(Default)]
struct Totals {
    spend: Money,
    period_start: Option<u64>,
    soft_alerted: bool,
    revoked: Option<String>,
    key_hash: Option<String>,
    scope: Option<Vec<String>>,
    model_spend: BTreeMap<String, u64>,
    model_period_start: BTreeMap<String, u64>,
}

/// Written by hand (`ToJson`: a smaller wasm); the maps only when they hold something.
impl ToJson for Totals {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Totals { spend, period_start, soft_alerted, revoked, key_hash, scope, model_spend, model_period_start } =
            self;
        let mut o = ObjectWriter::new(out);
        o.field("spend", spend).field("period_start", period_start).field("soft_alerted", soft_alerted);
        o.field("revoked", revoked).field("key_hash", key_hash).field("scope", scope);
        if !model_spend.is_empty() {
            o.field("model_spend", model_spend);
        }
        if !model_period_start.is_empty() {
            o.field("model_period_start", model_period_start);
        }
        o.end();
    }
}

/// Read by hand (`FromJson`): a smaller wasm. `scope` and the maps may be missing (rows
/// written before they existed).
impl FromJson for Totals {
    fn from_json(value: &Value) -> Result<Self, String> {
        use crate::fields::{bool, money, string, strings, u64, u64_map, Fields};
        let f = Fields::of(value)?;
        let totals = Totals {
            spend: f.req("spend", money),
            period_start: f.opt("period_start", u64),
            soft_alerted: f.req("soft_alerted", bool),
            revoked: f.opt("revoked", string),
            key_hash: f.opt("key_hash", string),
            scope: f.opt("scope", strings),
            model_spend: f.or_default("model_spend", u64_map),
            model_period_start: f.or_default("model_period_start", u64_map),
        };
        f.finish(totals)
    }
}

#[derive(Deserialize)]
struct LogRow {
    row: String,
}

/// Requests are read by hand (`FromJson`, see `crate::ledger::read`): a smaller wasm.
fn parse<T: FromJson>(body: &[u8]) -> Result<T, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("bad ledger request: {e}"))?;
    T::from_json(&value).map_err(|e| format!("bad ledger request: {e}"))
}

/// An answer as the JSON text the object sends (not a `Value` tree first).
fn to_json(v: &(impl ToJson + ?Sized)) -> Result<String, String> {
    Ok(json::to_string(v))
}

fn sql_error(e: worker::Error) -> String {
    format!("ledger storage failed: {e}")
}

impl Ledger {
    /// One call, start to end without awaiting: load, apply, save.
    fn handle(&self, path: &str, body: &[u8]) -> Result<String, String> {
        let sql = self.state.storage().sql();
        self.ensure_schema(&sql)?;
        let mut ledger = self.load(&sql)?;
        let now = now_ms();
        let answer = match path {
            "/admit" => to_json(&ledger.admit(&parse::<AdmitRequest>(body)?, now))?,
            "/settle" => {
                let request: SettleRequest = parse(body)?;
                to_json(&self.settle_all(&sql, &mut ledger, std::slice::from_ref(&request), now)?[0])?
            }
            "/settle-batch" => {
                let batch: Vec<SettleRequest> = parse(body)?;
                to_json(&self.settle_all(&sql, &mut ledger, &batch, now)?)?
            }
            "/release" => {
                let request: ReleaseRequest = parse(body)?;
                to_json(&ledger.release(&request.id, now, &request.limits))?
            }
            "/revoke" => {
                let request: RevokeRequest = parse(body)?;
                ledger.revoked = request.reason;
                ledger.scope = request.scope;
                if request.key_hash.is_some() {
                    ledger.key_hash = request.key_hash;
                }
                "null".to_string()
            }
            "/info" => {
                let request: InfoRequest = parse(body)?;
                ledger.maintain(now, &request.limits);
                to_json(&LedgerInfo {
                    spend: ledger.spend,
                    budget_reset_at: ledger.budget_reset_at(&request.limits),
                    model_spend: ledger.model_spend.clone(),
                    model_period_start: ledger.model_period_start.clone(),
                })?
            }
            "/logs" => return self.logs(&sql, &parse(body)?),
            _ => return Err(format!("unknown ledger call {path}")),
        };
        self.save(&sql, ledger)?;
        Ok(answer)
    }

    /// Settles each request and keeps its spend log row (once, however often it is settled):
    /// the rows go in one statement, in the same transaction as the ledger's own.
    fn settle_all(
        &self,
        sql: &SqlStorage,
        ledger: &mut LedgerState,
        batch: &[SettleRequest],
        now: u64,
    ) -> Result<Vec<Settled>, String> {
        let mut rows = Vec::new();
        let results = batch
            .iter()
            .map(|request| {
                let settled = ledger.settle(&request.settlement, now);
                if let (Some(row), false) = (&request.row, settled.duplicate) {
                    rows.push(row);
                }
                settled
            })
            .collect();
        self.insert_logs(sql, &rows, now)?;
        Ok(results)
    }

    fn ensure_schema(&self, sql: &SqlStorage) -> Result<(), String> {
        if self.schema_ready.get() {
            return Ok(());
        }
        for statement in [
            "CREATE TABLE IF NOT EXISTS ledger_state (id INTEGER PRIMARY KEY, json TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS ledger_entries (id TEXT PRIMARY KEY, json TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS spend_logs (call_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, start_time INTEGER NOT NULL, row TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS spend_logs_by_time ON spend_logs (start_time)",
        ] {
            sql.exec(statement, None).map_err(sql_error)?;
        }
        self.schema_ready.set(true);
        Ok(())
    }

    fn load(&self, sql: &SqlStorage) -> Result<LedgerState, String> {
        // Taken, not cloned: `save` puts it back; after a failed call the next one reloads.
        if let Some(state) = self.cached.borrow_mut().take() {
            return Ok(state);
        }
        let unreadable = |e: String| format!("ledger state unreadable: {e}");
        let read = |text: &str| json::from_str::<Value>(text).map_err(|e| e.to_string());
        let rows: Vec<JsonRow> = sql
            .exec("SELECT json FROM ledger_state WHERE id = 1", None)
            .and_then(|c| c.to_array())
            .map_err(sql_error)?;
        let totals: Totals = match rows.first() {
            Some(row) => read(&row.json).and_then(|v| Totals::from_json(&v)).map_err(unreadable)?,
            None => Totals::default(),
        };
        let rows: Vec<JsonRow> =
            sql.exec("SELECT json FROM ledger_entries", None).and_then(|c| c.to_array()).map_err(sql_error)?;
        let mut entries: Vec<Entry> = rows
            .iter()
            .map(|r| read(&r.json).and_then(|v| Entry::from_json(&v)))
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
        entries.sort_by_key(|e| e.at);
        Ok(LedgerState {
            entries: entries.into(),
            spend: totals.spend,
            period_start: totals.period_start,
            soft_alerted: totals.soft_alerted,
            revoked: totals.revoked,
            key_hash: totals.key_hash,
            scope: totals.scope,
            model_spend: totals.model_spend,
            model_period_start: totals.model_period_start,
            ..LedgerState::default()
        })
    }

    /// Writes the totals and only the entries the call touched: the cost of a call does not
    /// grow with the number of requests in the window, and a batch's entries go in one
    /// statement (SQLite reads the JSON array of its rows).
    fn save(&self, sql: &SqlStorage, mut state: LedgerState) -> Result<(), String> {
        if !state.removed.is_empty() {
            let ids = json::to_string(&state.removed);
            state.removed.clear();
            sql.exec("DELETE FROM ledger_entries WHERE id IN (SELECT value FROM json_each(?))", vec![ids.into()])
                .map_err(sql_error)?;
        }
        let mut changed = std::mem::take(&mut state.changed);
        changed.sort_unstable();
        changed.dedup();
        // [id, the entry's JSON] each: the JSON is stored as the text it was written as.
        let rows: Vec<(&String, String)> = changed
            .iter()
            .filter_map(|id| state.entries.latest(id).map(|entry| (id, json::to_string(entry))))
            .collect();
        if !rows.is_empty() {
            sql.exec(
                "INSERT OR REPLACE INTO ledger_entries (id, json) SELECT value ->> 0, value ->> 1 FROM json_each(?)",
                vec![json::to_string(&rows).into()],
            )
            .map_err(sql_error)?;
        }
        let totals = Totals {
            spend: state.spend,
            period_start: state.period_start,
            soft_alerted: state.soft_alerted,
            revoked: state.revoked.clone(),
            key_hash: state.key_hash.clone(),
            scope: state.scope.clone(),
            model_spend: state.model_spend.clone(),
            model_period_start: state.model_period_start.clone(),
        };
        let json = json::to_string(&totals);
        if *self.saved_totals.borrow() != json {
            sql.exec("INSERT OR REPLACE INTO ledger_state (id, json) VALUES (1, ?)", vec![json.clone().into()])
                .map_err(sql_error)?;
            *self.saved_totals.borrow_mut() = json;
        }
        *self.cached.borrow_mut() = Some(state);
        Ok(())
    }

    /// Inserts spend log rows in one statement ([call id, request id, start, row JSON] each).
    fn insert_logs(&self, sql: &SqlStorage, rows: &[&SpendLogRow], now: u64) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&String, &String, u64, String)> =
            rows.iter().map(|row| (&row.call_id, &row.request_id, row.start_time, json::to_string(*row))).collect();
        sql.exec(
            "INSERT OR IGNORE INTO spend_logs (call_id, request_id, start_time, row) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)",
            vec![json::to_string(&rows).into()],
        )
        .map_err(sql_error)?;
        let before = self.inserts.get();
        let inserts = before.wrapping_add(rows.len() as u32);
        self.inserts.set(inserts);
        // Every RETENTION_EVERY rows (and on the first).
        if before == 0 || before / RETENTION_EVERY != inserts / RETENTION_EVERY {
            let cutoff = now.saturating_sub(LOG_RETENTION_MS) as i64;
            sql.exec("DELETE FROM spend_logs WHERE start_time < ?", vec![cutoff.into()]).map_err(sql_error)?;
            sql.exec(
                "DELETE FROM spend_logs WHERE call_id IN (SELECT call_id FROM spend_logs ORDER BY start_time DESC LIMIT -1 OFFSET ?)",
                vec![(LOG_MAX_ROWS as i64).into()],
            )
            .map_err(sql_error)?;
        }
        Ok(())
    }

    fn logs(&self, sql: &SqlStorage, query: &LogsQuery) -> Result<String, String> {
        let start = query.start_ms.unwrap_or(0) as i64;
        let end = query.end_ms.map_or(i64::MAX, |e| e as i64);
        let limit = query.limit as i64;
        let cursor = match &query.request_id {
            Some(id) => sql.exec(
                "SELECT row FROM spend_logs WHERE start_time >= ? AND start_time <= ? AND (request_id = ? OR call_id = ?) ORDER BY start_time DESC LIMIT ?",
                vec![start.into(), end.into(), id.clone().into(), id.clone().into(), limit.into()],
            ),
            None => sql.exec(
                "SELECT row FROM spend_logs WHERE start_time >= ? AND start_time <= ? ORDER BY start_time DESC LIMIT ?",
                vec![start.into(), end.into(), limit.into()],
            ),
        };
        let rows: Vec<LogRow> = cursor.and_then(|c| c.to_array()).map_err(sql_error)?;
        let rows: Vec<SpendLogRow> = rows
            .iter()
            .filter_map(|r| json::from_str(&r.row).ok().and_then(|v| SpendLogRow::from_json(&v).ok()))
            .collect();
        to_json(&rows)
    }
}

/// The worker's handle on one ledger.
pub struct LedgerStub {
    object: ObjectStub,
}

impl LedgerStub {
    pub fn open(env: &Env, name: &str) -> Result<Self, ApiError> {
        Ok(LedgerStub { object: ObjectStub::open(env, BINDING, name)? })
    }

    pub async fn admit(&self, request: &AdmitRequest) -> Result<Decision, ApiError> {
        self.object.call("/admit", request).await
    }

    pub async fn settle(&self, request: &SettleRequest) -> Result<Settled, ApiError> {
        self.object.call("/settle", request).await
    }

    /// Settles several requests in one call (see `settlements`).
    pub async fn settle_batch(&self, batch: &[SettleRequest]) -> Result<Vec<Settled>, ApiError> {
        self.object.call("/settle-batch", &batch).await
    }

    /// Gives back a reservation another party refused (see `LedgerState::release`).
    pub async fn release(&self, request: &ReleaseRequest) -> Result<(), ApiError> {
        self.object.call::<Value>("/release", request).await.map(|_| ())
    }

    pub async fn revoke(&self, request: &RevokeRequest) -> Result<(), ApiError> {
        self.object.call::<Value>("/revoke", request).await.map(|_| ())
    }

    pub async fn info(&self, request: &InfoRequest) -> Result<LedgerInfo, ApiError> {
        self.object.call("/info", request).await
    }

    pub async fn logs(&self, query: &LogsQuery) -> Result<Vec<SpendLogRow>, ApiError> {
        self.object.call("/logs", query).await
    }
}
