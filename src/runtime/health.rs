//! `GET /health` (does each deployment answer?), `GET /model/info` (what each deployment
//! is: its limits, prices and cooldown) and `GET /model_group/info` (each model group), with
//! secrets left out.

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::credentials;
use super::objects::group_health;
use super::upstream::{self, Deadline};
use super::{now_ms, vars, Call, Caller};
use crate::config::{Deployment, GatewayConfig};
use crate::databricks;
use crate::embedded;
use crate::model_groups;
use crate::money::Money;
use crate::openai::ApiError;
use crate::pricing::{self, PriceSource};
use crate::time;

/// A health check waits at most this long for a deployment.
const CHECK_TIMEOUT_MS: u64 = 30_000;

/// Calls every deployment at once with the smallest request its mode allows.
pub async fn health(call: &Call<'_>) -> Result<Value, ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    let results = join_all(config.deployments.iter().map(|d| check(call, d))).await;
    let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
    for (mut entry, error) in results {
        match error {
            None => healthy.push(entry),
            Some(message) => {
                entry["error"] = Value::String(message);
                unhealthy.push(entry);
            }
        }
    }
    Ok(json!({
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
    }))
}

/// One deployment's entry, and the error that makes it unhealthy (its message scrubbed).
async fn check(call: &Call<'_>, d: &Deployment) -> (Value, Option<String>) {
    let base = vars::resolve(call.env, &d.api_base);
    let mut entry = json!({
        "model": format!("databricks/{}", d.endpoint),
        "model_name": d.model_name,
        "model_id": d.id,
        "api_base": base.as_ref().ok().map(|b| b.expose().to_string()),
    });
    let base = match base {
        Ok(base) => base,
        Err(e) => return (entry, Some(e.message)),
    };
    let token = match credentials::for_deployment(call.env, d, &base).await {
        Ok(credential) => credential.bearer,
        Err(e) => return (entry, Some(e.message)),
    };
    let (route, body) = match d.info.mode.as_deref() {
        Some("embedding") => ("embeddings", json!({"model": d.endpoint, "input": "ping"})),
        Some("completion") => ("completions", json!({"model": d.endpoint, "prompt": "ping", "max_tokens": 1})),
        _ => (
            "chat/completions",
            json!({"model": d.endpoint, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
        ),
    };
    let url = databricks::url(base.expose(), route);
    let timeout = d.timeout_ms.min(CHECK_TIMEOUT_MS);
    let started = now_ms();
    let mut deadline = Deadline::new(timeout);
    let error = match upstream::post_json(&url, &token, body.to_string().as_bytes(), &[], &mut deadline).await {
        Ok(answer) => {
            let status = answer.status();
            let bytes = upstream::body_within(&mut deadline, answer).await;
            (!(200..300).contains(&status))
                .then(|| databricks::upstream_error(status, &bytes, &[token.expose()]).message)
        }
        Err(e) => Some(e.message),
    };
    entry["latency_ms"] = json!(now_ms().saturating_sub(started));
    (entry, error)
}

/// `/model_group/info`: the model groups a caller may use (`?model_group=` picks one).
pub fn model_group_info(caller: &Caller, only: Option<&str>) -> Result<Value, ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    let data: Vec<Value> = usable_groups(config, caller)
        .into_iter()
        .filter(|g| only.is_none_or(|only| only == *g))
        .filter_map(|g| model_groups::info(config, g))
        .collect();
    Ok(json!({ "data": data }))
}

/// The configured groups a caller may name: all for the master key.
fn usable_groups<'c>(config: &'c GatewayConfig, caller: &Caller) -> Vec<&'c str> {
    let names = config.model_names();
    match caller {
        Caller::Master => names,
        Caller::Key(record) => {
            let visible = record.visible_models(&names, &config.access_groups);
            names.into_iter().filter(|g| visible.contains(g)).collect()
        }
    }
}

/// The deployments a caller may use, with limits, prices and cooldowns (no keys).
pub async fn model_info(call: &Call<'_>, caller: &Caller) -> Result<Value, ApiError> {
    let config = embedded::config().map_err(ApiError::internal)?;
    let groups = usable_groups(config, caller);
    let health = join_all(groups.iter().map(|g| group_health::shared_health(call.env, g))).await;
    let now = now_ms();
    let mut data = Vec::new();
    for (group, health) in groups.iter().zip(health) {
        let health = health.unwrap_or_default();
        for d in config.group(group) {
            let prices = pricing::prices_for(d);
            let known = |p: Money| (prices.source != PriceSource::Unknown).then(|| p.usd());
            data.push(json!({
                "model_name": d.model_name,
                "litellm_params": {
                    "model": format!("databricks/{}", d.endpoint),
                    "api_base": vars::resolve(call.env, &d.api_base).ok().map(|b| b.expose().to_string()),
                    "rpm": d.rpm,
                    "tpm": d.tpm,
                    "weight": d.weight,
                    "order": d.order,
                    "timeout": d.timeout_ms as f64 / 1000.0,
                    "stream_timeout": d.stream_timeout_ms as f64 / 1000.0,
                },
                "model_info": {
                    "id": d.id,
                    "mode": d.info.mode.as_deref().unwrap_or("chat"),
                    "input_cost_per_token": known(prices.input),
                    "output_cost_per_token": known(prices.output),
                    "price_source": prices.source.name(),
                    "max_input_tokens": d.info.max_input_tokens,
                    "max_output_tokens": d.info.max_output_tokens,
                    "cooldown_until": health.cooling_until(&d.id, now).map(time::format_rfc3339),
                },
            }));
        }
    }
    Ok(json!({ "data": data }))
}
