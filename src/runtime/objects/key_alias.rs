//! The `KeyAlias` Durable Object (one per alias: which key holds it) and the worker's calls to
//! it. A call reads the holder, applies the rule of `crate::aliases` and saves, with no `await`
//! in between, so two keys racing for one alias cannot both get it. It holds no rule of its own.

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, SqlStorage, State};

use super::ObjectStub;
use crate::aliases::{self, AliasAnswer, AliasHolder, AliasRequest};
use crate::fields::FromJson;
use crate::openai::ApiError;

const BINDING: &str = "KEY_ALIASES";

#[durable_object(fetch)]
pub struct KeyAlias {
    state: State,
}

impl DurableObject for KeyAlias {
    fn new(state: State, _env: Env) -> Self {
        KeyAlias { state }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let body = req.bytes().await?;
        let request =
            serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| AliasRequest::from_json(&v).ok());
        let Some(request) = request else {
            return Response::error("bad alias request", 400);
        };
        let sql = self.state.storage().sql();
        sql.exec("CREATE TABLE IF NOT EXISTS holder (id INTEGER PRIMARY KEY, key_id TEXT NOT NULL)", None)?;
        let mut holder = load(&sql)?;
        let before = holder.clone();
        let ok = match path.as_str() {
            "/claim" => holder.claim(&request.key_id),
            "/release" => holder.release(&request.key_id),
            _ => return Response::error(format!("unknown alias call {path}"), 400),
        };
        if holder != before {
            match &holder.key_id {
                Some(key_id) => {
                    sql.exec("INSERT OR REPLACE INTO holder (id, key_id) VALUES (1, ?)", vec![key_id.clone().into()])?
                }
                None => sql.exec("DELETE FROM holder WHERE id = 1", None)?,
            };
        }
        // JSON, without a content-type: only the gateway's own stub reads it.
        Response::from_bytes(crate::json::to_string(&AliasAnswer { ok }).into_bytes())
    }
}

fn load(sql: &SqlStorage) -> worker::Result<AliasHolder> {
    #[derive(Deserialize)]
    struct Row {
        key_id: String,
    }
    let rows: Vec<Row> = sql.exec("SELECT key_id FROM holder WHERE id = 1", None)?.to_array()?;
    Ok(AliasHolder { key_id: rows.into_iter().next().map(|r| r.key_id) })
}

/// Gives `alias` to the key `key_id`; false when another key holds it.
pub async fn claim(env: &Env, alias: &str, key_id: &str) -> Result<bool, ApiError> {
    call(env, alias, "/claim", key_id).await
}

/// Frees `alias` if the key `key_id` holds it.
pub async fn release(env: &Env, alias: &str, key_id: &str) -> Result<(), ApiError> {
    call(env, alias, "/release", key_id).await.map(|_| ())
}

async fn call(env: &Env, alias: &str, path: &str, key_id: &str) -> Result<bool, ApiError> {
    let object = ObjectStub::open(env, BINDING, &aliases::object_name(alias))?;
    let answer: AliasAnswer = object.call(path, &AliasRequest { key_id: key_id.to_string() }).await?;
    Ok(answer.ok)
}
