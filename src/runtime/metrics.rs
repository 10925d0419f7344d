//! `GET /metrics`: Prometheus text for the whole gateway, from the `Reports` object's all-time
//! totals and each model group's shared health. Read with the master key or the scrape token
//! (the worker secret `METRICS_TOKEN`), both compared in constant time; anyone else gets 401.

use futures_util::future::join_all;
use worker::{web_sys, Headers, Response};

use super::objects::group_health;
use super::objects::reports::ReportsStub;
use super::{now_ms, runtime_error, vars, Call};
use crate::auth;
use crate::embedded;
use crate::metrics::{self, DeploymentState};
use crate::openai::ApiError;

const TOKEN_VAR: &str = "METRICS_TOKEN";

pub async fn serve(req: &web_sys::Request, call: &Call<'_>) -> Result<Response, ApiError> {
    authorize(req, call)?;
    let config = embedded::config().map_err(ApiError::internal)?;
    let models: Vec<(String, String)> =
        config.deployments.iter().map(|d| (d.id.clone(), format!("databricks/{}", d.endpoint))).collect();
    let mut text = ReportsStub::open(call.env)?.metrics(&models).await?;
    let groups = config.model_names();
    let healths = join_all(groups.iter().map(|g| group_health::shared_health(call.env, g))).await;
    let now = now_ms();
    let mut deployments = Vec::new();
    for (group, health) in groups.iter().zip(healths) {
        // A group whose health cannot be read is left out rather than shown healthy.
        let Ok(health) = health else { continue };
        for d in config.group(group) {
            deployments.push(DeploymentState {
                litellm_model_name: format!("databricks/{}", d.endpoint),
                model_id: d.id.clone(),
                api_base: vars::resolve(call.env, &d.api_base).map(|b| b.expose().to_string()).unwrap_or_default(),
                state: metrics::deployment_state(&health, &d.id, now),
            });
        }
    }
    text.push_str(&metrics::render_deployments(&deployments));
    let headers = Headers::new();
    headers.set("content-type", "text/plain; version=0.0.4; charset=utf-8").map_err(runtime_error)?;
    Response::ok(text).map(|r| r.with_headers(headers)).map_err(runtime_error)
}

/// The master key or the scrape token; nothing else (no key lookup: a virtual key never reads
/// the whole gateway's numbers).
fn authorize(req: &web_sys::Request, call: &Call<'_>) -> Result<(), ApiError> {
    let refused = || ApiError::unauthorized("/metrics needs the master key or the scrape token (METRICS_TOKEN).");
    let presented = super::presented_key(req).ok_or_else(refused)?;
    if let Ok(token) = call.env.var(TOKEN_VAR).map(|v| v.to_string()) {
        if !token.is_empty() && auth::constant_time_eq(presented.as_bytes(), token.as_bytes()) {
            return Ok(());
        }
    }
    let config = embedded::config().map_err(ApiError::internal)?;
    if let Some(master) = &config.master_key {
        let master = vars::resolve(call.env, master)?;
        if auth::constant_time_eq(presented.as_bytes(), master.expose().as_bytes()) {
            return Ok(());
        }
    }
    Err(refused())
}
