//! The token a deployment is called with: a personal access token, or an OAuth
//! machine-to-machine token of a service principal, fetched from the workspace's
//! `/oidc/v1/token`, cached until shortly before it expires, and fetched once for every
//! request of an isolate that needs it at the same time (no token storm; each isolate
//! fetches its own, about once an hour).
//!
//! A service principal is used when the deployment gives `client_id` and `client_secret`, or
//! when it names no `api_key`, `DATABRICKS_TOKEN` is not set and the worker has
//! `DATABRICKS_CLIENT_ID` and `DATABRICKS_CLIENT_SECRET` (LiteLLM's convention).

use std::cell::RefCell;
use std::collections::HashMap;

use std::time::Duration as StdDuration;
use worker::wasm_bindgen::JsValue;
use worker::{Delay, Env, Headers};

use super::upstream::{self, within};
use super::{now_ms, vars};
use crate::base64;
use crate::config::{Deployment, OAuthClient, ValueRef};
use crate::databricks;
use crate::fields::{self, Fields, FromJson};
use crate::json;
use crate::keys;
use crate::openai::ApiError;
use crate::secret::Secret;

const TOKEN_TIMEOUT_MS: u64 = 30_000;

/// How long a request waits for another request's token fetch before fetching its own.
const WAIT_FOR_OTHER_MS: u64 = 10_000;
const POLL_MS: u64 = 10;

enum Slot {
    /// A token and the time it stops being used.
    Ready(String, u64),
    /// Another request is fetching one since this time. Workers cannot await I/O started by
    /// another request, so the others poll this slot on a timer instead.
    Fetching(u64),
}

thread_local! {
    /// Workspace, client id and a hash of the secret → this isolate's token.
    static TOKENS: RefCell<HashMap<String, Slot>> = RefCell::new(HashMap::new());
}

/// How a request authenticates to a deployment.
pub struct Credential {
    pub bearer: Secret,
    /// For an OAuth token: its cache key, so that a token Databricks refuses can be dropped.
    oauth: Option<(String, OAuthParts)>,
}

#[derive(Clone)]
struct OAuthParts {
    workspace: String,
    client_id: String,
    client_secret: String,
}

impl Credential {
    pub fn is_oauth(&self) -> bool {
        self.oauth.is_some()
    }
}

/// The credential for a deployment.
pub async fn for_deployment(env: &Env, deployment: &Deployment, api_base: &Secret) -> Result<Credential, ApiError> {
    let client = match &deployment.oauth {
        Some(client) => Some(client.clone()),
        None => match vars::resolve(env, &deployment.api_key) {
            Ok(bearer) => return Ok(Credential { bearer, oauth: None }),
            Err(missing) => {
                let worker_client = OAuthClient {
                    client_id: ValueRef::Env("DATABRICKS_CLIENT_ID".into()),
                    client_secret: ValueRef::Env("DATABRICKS_CLIENT_SECRET".into()),
                };
                let has = |v: &ValueRef| vars::resolve(env, v).is_ok();
                if has(&worker_client.client_id) && has(&worker_client.client_secret) {
                    Some(worker_client)
                } else {
                    return Err(missing);
                }
            }
        },
    };
    let Some(client) = client else { return Err(ApiError::internal("no credential")) };
    let parts = OAuthParts {
        workspace: databricks::workspace_root(api_base.expose()),
        client_id: vars::resolve(env, &client.client_id)?.expose().to_string(),
        client_secret: vars::resolve(env, &client.client_secret)?.expose().to_string(),
    };
    // The secret is part of the key (hashed): two secrets for one client are two cache entries.
    let key = format!("{}|{}|{}", parts.workspace, parts.client_id, &keys::hash_key(&parts.client_secret)[..16]);
    let token = oauth_token(&key, &parts).await?;
    Ok(Credential { bearer: Secret::new(token), oauth: Some((key, parts)) })
}

/// Databricks refused an OAuth token (expired or revoked early): drops it, unless another
/// request already replaced it, and returns a fresh one.
pub async fn refresh(credential: &Credential) -> Result<Option<Credential>, ApiError> {
    let Some((key, parts)) = &credential.oauth else { return Ok(None) };
    TOKENS.with(|t| {
        let mut tokens = t.borrow_mut();
        if matches!(tokens.get(key), Some(Slot::Ready(token, _)) if token == credential.bearer.expose()) {
            tokens.remove(key);
        }
    });
    let token = oauth_token(key, parts).await?;
    Ok(Some(Credential { bearer: Secret::new(token), oauth: credential.oauth.clone() }))
}

async fn oauth_token(key: &str, parts: &OAuthParts) -> Result<String, ApiError> {
    let started = now_ms();
    loop {
        let now = now_ms();
        let state = TOKENS.with(|t| match t.borrow().get(key) {
            Some(Slot::Ready(token, until)) if *until > now => Some(Ok(token.clone())),
            Some(Slot::Fetching(since)) if now.saturating_sub(*since) < WAIT_FOR_OTHER_MS => Some(Err(())),
            _ => None,
        });
        match state {
            Some(Ok(token)) => return Ok(token),
            // Another request is fetching: wait for its token rather than asking again.
            Some(Err(())) if now.saturating_sub(started) < WAIT_FOR_OTHER_MS => {
                Delay::from(StdDuration::from_millis(POLL_MS)).await;
            }
            _ => break,
        }
    }
    TOKENS.with(|t| t.borrow_mut().insert(key.to_string(), Slot::Fetching(now_ms())));
    let result = fetch_token(parts.clone()).await;
    TOKENS.with(|t| {
        let mut tokens = t.borrow_mut();
        match &result {
            Ok((token, until)) => tokens.insert(key.to_string(), Slot::Ready(token.clone(), *until)),
            Err(_) => tokens.remove(key),
        };
    });
    result.map(|(token, _)| token)
}

struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// Read by hand (`FromJson`: a smaller wasm).
impl FromJson for TokenAnswer {
    fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let answer = TokenAnswer {
            access_token: f.req("access_token", fields::string),
            expires_in: f.opt("expires_in", fields::u64),
        };
        f.finish(answer)
    }
}

/// `POST {workspace}/oidc/v1/token` with the client's credentials. Errors name the client id
/// and what Databricks said, never the secret.
async fn fetch_token(parts: OAuthParts) -> Result<(String, u64), ApiError> {
    let failed = |detail: String| {
        ApiError::bad_gateway(format!(
            "Databricks OAuth failed for service principal {} at {}: {detail}",
            parts.client_id, parts.workspace
        ))
    };
    let url = format!("{}/oidc/v1/token", parts.workspace);
    let request = (|| {
        let headers = Headers::new();
        headers.set("content-type", "application/x-www-form-urlencoded")?;
        let basic = base64::standard(format!("{}:{}", parts.client_id, parts.client_secret).as_bytes());
        headers.set("authorization", &format!("Basic {basic}"))?;
        headers.set("user-agent", upstream::USER_AGENT)?;
        upstream::post_request(
            &url,
            Some(&headers),
            &JsValue::from_str("grant_type=client_credentials&scope=all-apis"),
            None,
        )
    })()
    .map_err(|e| failed(e.to_string()))?;
    let response = match within(TOKEN_TIMEOUT_MS, upstream::fetch(&request)).await {
        Some(Ok(response)) => response,
        Some(Err(e)) => return Err(failed(e.to_string())),
        None => return Err(failed("no answer within 30 s".into())),
    };
    let status = response.status();
    let bytes = upstream::bytes(&response).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).replace(&parts.client_secret, "[REDACTED]");
    if status != 200 {
        let detail: String = text.chars().take(300).collect();
        return Err(failed(format!("HTTP {status}: {detail}")));
    }
    let answer = json::from_str(&text)
        .ok()
        .and_then(|v| TokenAnswer::from_json(&v).ok())
        .ok_or_else(|| failed("the token answer is malformed".into()))?;
    let lifetime_s = answer.expires_in.unwrap_or(3600);
    let usable_s = databricks::oauth_usable_s(lifetime_s);
    Ok((answer.access_token, now_ms().saturating_add(usable_s.saturating_mul(1000))))
}
