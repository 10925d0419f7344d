//! The cooldowns of each model group, shared by every isolate through one `GroupHealth`
//! Durable Object per group. Each isolate keeps a copy, refreshed in the background at most
//! once a second and updated at once by its own failures, so routing never waits on the
//! object: another isolate sees a cooldown within about a second.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use worker::{durable_object, Context, DurableObject, Env, Request, Response, SqlStorage, State};

use super::ObjectStub;
use crate::config::{Deployment, RouterSettings};
use crate::fields::{self, Fields, FromJson};
use crate::json::{self, ObjectWriter, ToJson};
use crate::openai::ApiError;
use crate::routing::Health;
use crate::runtime::now_ms;

const HEALTH_BINDING: &str = "HEALTH";
/// How stale an isolate's copy of a group's cooldowns may get before it asks again.
const HEALTH_REFRESH_MS: u64 = 1_000;

thread_local! {
    /// Group → (fetched at, cooldowns): this isolate's copy of the shared health.
    static HEALTH: RefCell<HashMap<String, (u64, Health)>> = RefCell::new(HashMap::new());
}

/// This isolate's copy of a group's health; a stale copy is refreshed in the background.
pub fn health_view(env: &Env, ctx: &Context, group: &str) -> Health {
    let now = now_ms();
    let (fetched_at, health) = HEALTH.with(|h| h.borrow().get(group).cloned().unwrap_or((0, Health::default())));
    if fetched_at + HEALTH_REFRESH_MS <= now {
        // Marked fresh now, so that concurrent requests do not all ask.
        HEALTH.with(|h| h.borrow_mut().insert(group.to_string(), (now, health.clone())));
        if let Ok(stub) = HealthStub::open(env, group) {
            let group = group.to_string();
            ctx.wait_until(async move {
                if let Ok(shared) = stub.call("/state", &Value::Null).await {
                    merge_into_cache(&group, &shared);
                }
            });
        }
    }
    health
}

fn merge_into_cache(group: &str, shared: &Health) {
    let now = now_ms();
    HEALTH.with(|h| {
        let mut cache = h.borrow_mut();
        let entry = cache.entry(group.to_string()).or_insert((now, Health::default()));
        entry.1.merge(shared, now);
    });
}

/// A failed attempt: cools the deployment down here at once when the rules say so, and tells
/// the group's shared health in the background.
pub fn record_failure(
    env: &Env,
    ctx: &Context,
    group: &str,
    deployment: &Deployment,
    immediate: bool,
    group_size: usize,
    settings: &RouterSettings,
) {
    let now = now_ms();
    HEALTH.with(|h| {
        let mut cache = h.borrow_mut();
        let entry = cache.entry(group.to_string()).or_insert((now, Health::default()));
        entry.1.record_failure(&deployment.id, now, immediate, group_size, settings);
    });
    if let Ok(stub) = HealthStub::open(env, group) {
        let report = FailureReport { id: deployment.id.clone(), immediate, group_size, settings: settings.clone() };
        let group = group.to_string();
        ctx.wait_until(async move {
            if let Ok(shared) = stub.call("/fail", &report).await {
                merge_into_cache(&group, &shared);
            }
        });
    }
}

/// Every deployment's cooldown as the shared object has it (for `/model/info`).
pub async fn shared_health(env: &Env, group: &str) -> Result<Health, ApiError> {
    HealthStub::open(env, group)?.call("/state", &Value::Null).await
}

struct FailureReport {
    id: String,
    immediate: bool,
    group_size: usize,
    settings: RouterSettings,
}

/// Written by hand (`ToJson`: a smaller wasm).
impl ToJson for FailureReport {
    fn write_json(&self, out: &mut Vec<u8>) {
        let FailureReport { id, immediate, group_size, settings } = self;
        let mut o = ObjectWriter::new(out);
        o.field("id", id).field("immediate", immediate).field("group_size", group_size).field("settings", settings);
        o.end();
    }
}

/// Read by hand (`FromJson`: a smaller wasm).
impl FromJson for FailureReport {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let settings = f.req("settings", |v| RouterSettings::from_json(v).ok().map(Some));
        let report = FailureReport {
            id: f.req("id", fields::string),
            immediate: f.req("immediate", fields::bool),
            group_size: f.req("group_size", |v| v.as_u64()?.try_into().ok()),
            settings: settings.unwrap_or_default(),
        };
        f.finish(report)
    }
}

/// The cooldowns of one model group, shared by every isolate. Holds no rule of its own.
#[durable_object(fetch)]
pub struct GroupHealth {
    state: State,
}

impl DurableObject for GroupHealth {
    fn new(state: State, _env: Env) -> Self {
        GroupHealth { state }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let body = req.bytes().await?;
        let sql = self.state.storage().sql();
        sql.exec("CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, json TEXT NOT NULL)", None)?;
        let mut health = load_health(&sql)?;
        let now = now_ms();
        if path == "/fail" {
            let report = serde_json::from_slice::<Value>(&body)
                .map_err(|e| e.to_string())
                .and_then(|v| FailureReport::from_json(&v))
                .map_err(worker::Error::RustError)?;
            health.record_failure(&report.id, now, report.immediate, report.group_size, &report.settings);
            let json = json::to_string(&health);
            sql.exec("INSERT OR REPLACE INTO health (id, json) VALUES (1, ?)", vec![json.into()])?;
        }
        health.cooldown_until.retain(|_, until| *until > now);
        // JSON, without a content-type: only the gateway's own stub reads it.
        Response::from_bytes(json::to_string(&health).into_bytes())
    }
}

fn load_health(sql: &SqlStorage) -> worker::Result<Health> {
    #[derive(Deserialize)]
    struct Row {
        json: String,
    }
    let rows: Vec<Row> = sql.exec("SELECT json FROM health WHERE id = 1", None)?.to_array()?;
    let read = |text: &str| crate::json::from_str::<Value>(text).ok().and_then(|v| Health::from_json(&v).ok());
    Ok(rows.first().and_then(|r| read(&r.json)).unwrap_or_default())
}

struct HealthStub {
    object: ObjectStub,
}

impl HealthStub {
    fn open(env: &Env, group: &str) -> Result<Self, ApiError> {
        Ok(HealthStub { object: ObjectStub::open(env, HEALTH_BINDING, group)? })
    }

    async fn call(&self, path: &str, body: &(impl ToJson + ?Sized)) -> Result<Health, ApiError> {
        self.object.call(path, body).await
    }
}
