//! The Workers Analytics Engine data point of a request (when an `ANALYTICS` dataset is bound):
//! one per settled request. The layout is what the README's SQL reads; change both together.
//!
//! - index1: the key's hash (`master` for the master key): Analytics Engine samples per index.
//! - blobs: 1 key hash, 2 team, 3 model group, 4 deployment, 5 status class (`success` or
//!   `failure`), 6 end user, 7 key alias, 8 internal user.
//! - doubles: 1 prompt tokens, 2 completion tokens, 3 cost (USD), 4 latency (ms), 5 HTTP status.

use crate::reports::ReportEvent;

#[derive(Clone, Debug, PartialEq)]
pub struct DataPoint {
    pub index: String,
    pub blobs: Vec<String>,
    pub doubles: Vec<f64>,
}

impl DataPoint {
    pub fn of(event: &ReportEvent) -> Self {
        let key = if event.api_key.is_empty() { "master".to_string() } else { event.api_key.clone() };
        DataPoint {
            index: key.clone(),
            blobs: vec![
                key,
                event.team_id.clone(),
                event.model_group.clone(),
                event.deployment.clone(),
                if event.failed() { "failure" } else { "success" }.to_string(),
                event.end_user.clone(),
                event.key_alias.clone(),
                event.user_id.clone(),
            ],
            doubles: vec![
                event.prompt_tokens as f64,
                event.completion_tokens as f64,
                event.spend.usd(),
                event.latency_ms as f64,
                f64::from(event.status),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    #[test]
    fn a_request_is_one_point_in_the_documented_layout() {
        let event = ReportEvent {
            api_key: "ab12".into(),
            team_id: "team-a".into(),
            model_group: "gpt".into(),
            deployment: "gpt-a".into(),
            prompt_tokens: 12,
            completion_tokens: 3,
            spend: Money::from_pico(2_500_000_000),
            status: 200,
            latency_ms: 340,
            ..ReportEvent::default()
        };
        let point = DataPoint::of(&event);
        assert_eq!(point.index, "ab12");
        assert_eq!(point.blobs, ["ab12", "team-a", "gpt", "gpt-a", "success", "", "", ""]);
        assert_eq!(point.doubles, [12.0, 3.0, 0.0025, 340.0, 200.0]);
        let master = DataPoint::of(&ReportEvent { status: 502, ..ReportEvent::default() });
        assert_eq!((master.index.as_str(), master.blobs[4].as_str()), ("master", "failure"));
    }
}
