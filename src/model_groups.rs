//! `GET /model_group/info`: one entry per model group (a `model_name` and all its deployments),
//! in LiteLLM's shape. A group's figures combine its deployments as LiteLLM combines them: the
//! largest context and output sizes, the dearest prices, the sum of `rpm` and `tpm`.

use serde_json::{json, Value};

use crate::config::GatewayConfig;
use crate::money::Money;
use crate::pricing::{self, PriceSource};

/// The entry of `group`, `None` when the config has no such group.
pub fn info(config: &GatewayConfig, group: &str) -> Option<Value> {
    let deployments = config.group(group);
    let first = deployments.first()?;
    // One pass: the largest sizes, the summed limits, the dearest known prices.
    let (mut max_input, mut max_output, mut rpm, mut tpm) = (None, None, None, None);
    let (mut input, mut output) = (None, None);
    for d in &deployments {
        max_input = max_input.max(d.info.max_input_tokens);
        max_output = max_output.max(d.info.max_output_tokens);
        rpm = add(rpm, d.rpm);
        tpm = add(tpm, d.tpm);
        let prices = pricing::prices_for(d);
        if prices.source != PriceSource::Unknown {
            input = input.max(Some(prices.input));
            output = output.max(Some(prices.output));
        }
    }
    Some(json!({
        "model_group": group,
        "providers": ["databricks"],
        "max_input_tokens": max_input,
        "max_output_tokens": max_output,
        "input_cost_per_token": input.map(Money::usd),
        "output_cost_per_token": output.map(Money::usd),
        "mode": first.info.mode.as_deref().unwrap_or("chat"),
        "tpm": tpm,
        "rpm": rpm,
        "access_groups": config.access_groups_of(group),
    }))
}

/// A sum of the limits that are set (`None` when none is).
fn add(sum: Option<u64>, limit: Option<u64>) -> Option<u64> {
    match (sum, limit) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessGroup, Deployment, RouterSettings};

    fn deployment(group: &str, endpoint: &str) -> Deployment {
        Deployment { model_name: group.into(), ..Deployment::for_tests(endpoint) }
    }

    #[test]
    fn a_group_combines_its_deployments() {
        let mut a = deployment("g", "ep-a");
        (a.rpm, a.tpm) = (Some(10), Some(1_000));
        a.info.max_input_tokens = Some(8_000);
        a.info.input_cost_per_token = Some(Money::from_pico(1_000_000));
        a.info.output_cost_per_token = Some(Money::from_pico(2_000_000));
        let mut b = deployment("g", "ep-b");
        b.rpm = Some(5);
        b.info.max_input_tokens = Some(16_000);
        b.info.max_output_tokens = Some(4_096);
        b.info.input_cost_per_token = Some(Money::from_pico(3_000_000));
        b.info.output_cost_per_token = Some(Money::from_pico(1_000_000));
        let mut e = deployment("embed", "unpriced-embedder");
        e.info.mode = Some("embedding".into());
        let config = GatewayConfig {
            deployments: vec![a, b, e],
            master_key: None,
            enforce_model_rate_limits: false,
            router: RouterSettings::default(),
            drop_params: false,
            access_groups: vec![AccessGroup { name: "team-x".into(), models: vec!["g".into()] }],
        };
        assert_eq!(
            info(&config, "g").unwrap(),
            json!({
                "model_group": "g", "providers": ["databricks"],
                "max_input_tokens": 16_000, "max_output_tokens": 4_096,
                "input_cost_per_token": 3e-6, "output_cost_per_token": 2e-6,
                "mode": "chat", "tpm": 1_000, "rpm": 15, "access_groups": ["team-x"],
            })
        );
        let embed = info(&config, "embed").unwrap();
        assert_eq!(embed["mode"], "embedding");
        assert_eq!((embed["input_cost_per_token"].clone(), embed["rpm"].clone()), (Value::Null, Value::Null));
        assert_eq!(embed["access_groups"], json!([]));
        assert!(info(&config, "nope").is_none());
    }
}
