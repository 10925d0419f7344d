//! `/metrics`: the gateway's all-time aggregates as Prometheus text (exposition format 0.0.4),
//! with LiteLLM's metric names and labels (`litellm/integrations/prometheus.py`). Counters are
//! written as LiteLLM's `prometheus_client` writes them in that format: family and samples
//! `<name>_total`.
//!
//! The numbers are the whole gateway's (the `Reports` object's totals), never one isolate's.

use std::fmt::Write;

use crate::money::Money;
use crate::reports::LATENCY_BUCKETS_MS;
use crate::routing::Health;

/// LiteLLM's `api_provider` label for every deployment here.
const PROVIDER: &str = "databricks";
const MINUTE_MS: u64 = 60_000;

/// A deployment as `litellm_deployment_state` labels it, and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentState {
    /// `litellm_params.model` (`databricks/<endpoint>`).
    pub litellm_model_name: String,
    pub model_id: String,
    pub api_base: String,
    /// 0 healthy, 1 partial outage (failures in the last minute), 2 complete outage (cooling
    /// down), as LiteLLM's `litellm_deployment_state`.
    pub state: u8,
}

/// A deployment's state from its group's shared health.
pub fn deployment_state(health: &Health, id: &str, now_ms: u64) -> u8 {
    if health.cooldown_until.get(id).is_some_and(|until| *until > now_ms) {
        2
    } else if health.failures.get(id).is_some_and(|f| f.iter().any(|at| at + MINUTE_MS > now_ms)) {
        1
    } else {
        0
    }
}

/// All-time totals of one (key, team, user, end user, model group, deployment). Spend in
/// pico-dollars.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TotalsRow {
    pub api_key: String,
    pub key_alias: String,
    pub team_id: String,
    pub user_id: String,
    pub end_user: String,
    pub model_group: String,
    pub deployment: String,
    pub requests: u64,
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend: u64,
    pub latency_ms: u64,
}

/// Latency bucket counts (not cumulative) of one model group, ordered by group then bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyRow {
    pub model_group: String,
    pub bucket: usize,
    pub count: u64,
}

/// What the request series of `/metrics` are made of (the reports object's all-time totals).
pub struct Snapshot<'a> {
    pub totals: &'a [TotalsRow],
    pub latency: &'a [LatencyRow],
    /// Deployment id → `litellm_params.model`, for the `model` label.
    pub models: &'a [(String, String)],
}

/// A counter of the per-request metrics: its name, help text and value.
type Counter = (&'static str, &'static str, fn(&TotalsRow) -> String);

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", body.join(","))
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The request series (counters and the latency histogram) of a snapshot, in Prometheus text.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::new();
    // The labels of LiteLLM's per-request counters that the gateway knows.
    let request_labels = |row: &TotalsRow| {
        let model = snapshot.models.iter().find(|(id, _)| *id == row.deployment).map_or(&row.model_group, |(_, m)| m);
        labels(&[
            ("end_user", &row.end_user),
            ("hashed_api_key", &row.api_key),
            ("api_key_alias", &row.key_alias),
            ("model", model),
            ("team", &row.team_id),
            ("user", &row.user_id),
            ("requested_model", &row.model_group),
            ("model_id", &row.deployment),
            ("api_provider", PROVIDER),
        ])
    };
    let counters: [Counter; 6] = [
        (
            "litellm_requests_metric",
            "Total number of LLM calls to litellm - track total per API Key, team, user",
            |r| r.requests.to_string(),
        ),
        ("litellm_proxy_failed_requests_metric", "Total number of failed responses from proxy", |r| {
            r.failures.to_string()
        }),
        ("litellm_spend_metric", "Total spend on LLM requests", |r| format!("{:?}", Money::from_pico(r.spend).usd())),
        ("litellm_total_tokens_metric", "Total number of input + output tokens from LLM requests", |r| {
            (r.prompt_tokens + r.completion_tokens).to_string()
        }),
        ("litellm_input_tokens_metric", "Total number of input tokens from LLM requests", |r| {
            r.prompt_tokens.to_string()
        }),
        ("litellm_output_tokens_metric", "Total number of output tokens from LLM requests", |r| {
            r.completion_tokens.to_string()
        }),
    ];
    for (name, help, value) in counters {
        let name = format!("{name}_total");
        header(&mut out, &name, "counter", help);
        for row in snapshot.totals {
            let _ = writeln!(out, "{name}{} {}", request_labels(row), value(row));
        }
    }

    let name = "litellm_request_total_latency_metric";
    header(&mut out, name, "histogram", "Total latency (seconds) for a request to LiteLLM");
    let mut rows = snapshot.latency.iter().peekable();
    while let Some(first) = rows.peek() {
        let group = first.model_group.clone();
        let mut buckets = [0u64; LATENCY_BUCKETS_MS.len() + 1];
        while let Some(row) = rows.next_if(|r| r.model_group == group) {
            if let Some(slot) = buckets.get_mut(row.bucket) {
                *slot += row.count;
            }
        }
        let mut cumulative = 0;
        for (i, count) in buckets.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS_MS.get(i).map_or("+Inf".to_string(), |ms| format!("{:?}", *ms as f64 / 1000.0));
            let _ = writeln!(out, "{name}_bucket{} {cumulative}", labels(&[("model_group", &group), ("le", &le)]));
        }
        let latency_ms: u64 = snapshot.totals.iter().filter(|r| r.model_group == group).map(|r| r.latency_ms).sum();
        let group_labels = labels(&[("model_group", &group)]);
        let _ = writeln!(out, "{name}_sum{group_labels} {:?}", latency_ms as f64 / 1000.0);
        let _ = writeln!(out, "{name}_count{group_labels} {cumulative}");
    }
    out
}

/// `litellm_deployment_state`, one series per deployment, in Prometheus text.
pub fn render_deployments(deployments: &[DeploymentState]) -> String {
    let mut out = String::new();
    let name = "litellm_deployment_state";
    let help =
        "LLM Deployment Analytics - The state of the deployment: 0 = healthy, 1 = partial outage, 2 = complete outage";
    header(&mut out, name, "gauge", help);
    for d in deployments {
        let set = labels(&[
            ("litellm_model_name", &d.litellm_model_name),
            ("model_id", &d.model_id),
            ("api_base", &d.api_base),
            ("api_provider", PROVIDER),
        ]);
        let _ = writeln!(out, "{name}{set} {}", d.state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, group: &str, requests: u64, spend: u64, latency_ms: u64) -> TotalsRow {
        TotalsRow {
            api_key: key.into(),
            model_group: group.into(),
            deployment: format!("{group}-a"),
            end_user: "al\"ice".into(),
            key_alias: "svc".into(),
            requests,
            failures: 1,
            prompt_tokens: 10,
            completion_tokens: 4,
            spend,
            latency_ms,
            ..TotalsRow::default()
        }
    }

    #[test]
    fn counters_histograms_and_states() {
        let totals = [row("k1", "gpt", 3, 1_500_000_000_000, 900), row("k2", "gpt", 1, 1, 50)];
        let latency = [
            LatencyRow { model_group: "gpt".into(), bucket: 0, count: 1 },
            LatencyRow { model_group: "gpt".into(), bucket: 7, count: 3 },
        ];
        let deployments = [DeploymentState {
            litellm_model_name: "databricks/gpt".into(),
            model_id: "gpt-a".into(),
            api_base: "https://x".into(),
            state: 2,
        }];
        let models = [("gpt-a".to_string(), "databricks/gpt".to_string())];
        let text = render(&Snapshot { totals: &totals, latency: &latency, models: &models })
            + &render_deployments(&deployments);
        assert!(text.contains("# TYPE litellm_requests_metric_total counter\n"));
        assert!(text.contains(
            "litellm_requests_metric_total{end_user=\"al\\\"ice\",hashed_api_key=\"k1\",api_key_alias=\"svc\",model=\"databricks/gpt\",team=\"\",user=\"\",requested_model=\"gpt\",model_id=\"gpt-a\",api_provider=\"databricks\"} 3\n"
        ));
        assert!(text.contains("litellm_spend_metric_total{end_user=\"al\\\"ice\",hashed_api_key=\"k1\","));
        assert!(text.contains("} 1.5\n"));
        assert!(text.contains("} 1e-12\n"));
        assert!(text.contains("litellm_total_tokens_metric_total{"));
        assert!(text.contains("litellm_request_total_latency_metric_bucket{model_group=\"gpt\",le=\"0.005\"} 1\n"));
        assert!(text.contains("litellm_request_total_latency_metric_bucket{model_group=\"gpt\",le=\"0.5\"} 1\n"));
        assert!(text.contains("litellm_request_total_latency_metric_bucket{model_group=\"gpt\",le=\"1.0\"} 4\n"));
        assert!(text.contains("litellm_request_total_latency_metric_bucket{model_group=\"gpt\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("litellm_request_total_latency_metric_sum{model_group=\"gpt\"} 0.95\n"));
        assert!(text.contains("litellm_request_total_latency_metric_count{model_group=\"gpt\"} 4\n"));
        assert!(text.contains(
            "litellm_deployment_state{litellm_model_name=\"databricks/gpt\",model_id=\"gpt-a\",api_base=\"https://x\",api_provider=\"databricks\"} 2\n"
        ));
    }

    #[test]
    fn states_follow_cooldowns_and_recent_failures() {
        let mut health = Health::default();
        assert_eq!(deployment_state(&health, "a", 1_000_000), 0);
        health.failures.insert("a".into(), vec![999_000]);
        assert_eq!(deployment_state(&health, "a", 1_000_000), 1);
        assert_eq!(deployment_state(&health, "a", 1_059_000), 0);
        health.cooldown_until.insert("a".into(), 1_005_000);
        assert_eq!(deployment_state(&health, "a", 1_000_000), 2);
    }
}
