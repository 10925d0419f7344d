//! Spend reports: what each request adds to the gateway-wide aggregates, and how the aggregates
//! answer LiteLLM's report endpoints (`/global/spend/report`, `/global/spend/keys`,
//! `/global/spend/models`, `/spend/tags`).
//!
//! Every settled request becomes one [`ReportEvent`]. Events travel in batches to the `Reports`
//! Durable Object, which adds each to a per-day row keyed by who and what the request was for,
//! to per-day tag counts, and to all-time totals and latency buckets (for `/metrics`). SQLite
//! groups and orders the rows; the functions here shape them in one pass (no maps, no sorting:
//! every generic collection costs the wasm bytes). Money stays in pico-dollars until an answer
//! is shaped; sums are exact.

use serde_json::{json, Value};

use crate::ledger::messages::SpendLogRow;
use crate::money::Money;

pub const DAY_MS: u64 = 86_400_000;

/// LiteLLM's latency buckets (`LATENCY_BUCKETS`, seconds), in milliseconds; the last bucket,
/// `+Inf`, has index `LATENCY_BUCKETS_MS.len()`.
pub const LATENCY_BUCKETS_MS: [u64; 17] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 420_000, 600_000];

/// One settled request, as the reports count it. Empty strings stand for "none".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportEvent {
    /// The gateway's call id: a batch sent twice counts each call once.
    pub call_id: String,
    /// When the request started (Unix ms): the day it counts on (UTC).
    pub at: u64,
    /// SHA-256 of the key; empty for the master key.
    pub api_key: String,
    pub key_alias: String,
    pub team_id: String,
    pub user_id: String,
    pub end_user: String,
    pub model_group: String,
    /// The deployment that served it (empty when none was reached).
    pub deployment: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend: Money,
    pub status: u16,
    /// From the request's start to its settlement (a stream's end).
    pub latency_ms: u64,
    pub tags: Vec<String>,
}

impl ReportEvent {
    /// The event of a settled request, from its spend log row (usage, spend and status final).
    pub fn of(row: &SpendLogRow) -> Self {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        ReportEvent {
            call_id: row.call_id.clone(),
            at: row.start_time,
            api_key: row.api_key.clone(),
            key_alias: text(&row.key_alias),
            team_id: text(&row.team_id),
            user_id: text(&row.user_id),
            end_user: text(&row.end_user),
            model_group: row.model_group.clone(),
            deployment: row.deployment.clone(),
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            spend: row.spend,
            status: row.status,
            latency_ms: row.end_time.saturating_sub(row.start_time),
            tags: row.tags.clone(),
        }
    }

    pub fn failed(&self) -> bool {
        !(200..300).contains(&self.status)
    }

    /// The UTC day it counts on.
    pub fn day(&self) -> String {
        day_of(self.at)
    }

    /// Its tags, each once (a tag repeated in one request counts once).
    pub fn distinct_tags(&self) -> Vec<&str> {
        let mut tags: Vec<&str> = Vec::with_capacity(self.tags.len());
        for tag in &self.tags {
            if !tags.contains(&tag.as_str()) {
                tags.push(tag);
            }
        }
        tags
    }

    /// The event on the wire to the reports object: a JSON array, read back by [`Self::decode`]
    /// (no derived serde code: each derived type costs the wasm kilobytes). Spend as text.
    pub fn encode(&self) -> Value {
        json!([
            self.call_id,
            self.at,
            self.api_key,
            self.key_alias,
            self.team_id,
            self.user_id,
            self.end_user,
            self.model_group,
            self.deployment,
            self.prompt_tokens,
            self.completion_tokens,
            self.spend.pico().to_string(),
            self.status,
            self.latency_ms,
            self.tags,
        ])
    }

    pub fn decode(value: &Value) -> Option<Self> {
        let a = value.as_array()?;
        let s = |i: usize| a.get(i).and_then(Value::as_str).map(str::to_string);
        let n = |i: usize| a.get(i).and_then(Value::as_u64);
        let mut tags = Vec::new();
        for tag in a.get(14)?.as_array()? {
            tags.push(tag.as_str()?.to_string());
        }
        Some(ReportEvent {
            call_id: s(0)?,
            at: n(1)?,
            api_key: s(2)?,
            key_alias: s(3)?,
            team_id: s(4)?,
            user_id: s(5)?,
            end_user: s(6)?,
            model_group: s(7)?,
            deployment: s(8)?,
            prompt_tokens: n(9)?,
            completion_tokens: n(10)?,
            spend: Money::from_pico(s(11)?.parse().ok()?),
            status: u16::try_from(n(12)?).ok()?,
            latency_ms: n(13)?,
            tags,
        })
    }
}

/// A UTC day, `YYYY-MM-DD`, of Unix milliseconds.
pub fn day_of(ms: u64) -> String {
    crate::time::format_rfc3339(ms)[..10].to_string()
}

/// A `YYYY-MM-DD` query parameter, strictly (LiteLLM's `%Y-%m-%d`): the day's start in Unix ms.
pub fn parse_day(text: &str) -> Option<u64> {
    (text.len() == 10).then(|| crate::time::parse_rfc3339(text)).flatten()
}

/// The first and last day (both included) of the 30 days up to `now_ms` (LiteLLM's
/// `Last30dKeysBySpend` and `Last30dModelsBySpend`).
pub fn last_30_days(now_ms: u64) -> (String, String) {
    (day_of(now_ms.saturating_sub(29 * DAY_MS)), day_of(now_ms))
}

/// The bucket a latency falls in (the first whose bound it does not exceed).
pub fn latency_bucket(latency_ms: u64) -> usize {
    LATENCY_BUCKETS_MS.iter().position(|&bound| latency_ms <= bound).unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// What `/global/spend/report` groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Team,
    Customer,
    ApiKey,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<GroupBy> {
        match text {
            "team" => Some(GroupBy::Team),
            "customer" => Some(GroupBy::Customer),
            "api_key" => Some(GroupBy::ApiKey),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Customer => "customer",
            GroupBy::ApiKey => "api_key",
        }
    }
}

/// Spend and tokens of one (day, group, model group, key), as SQL sums them; ordered by day,
/// group, model, key (for `api_key` reports: dearest key first, then model; `day` and `group`
/// empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRow {
    pub day: String,
    pub group: String,
    pub model: String,
    pub api_key: String,
    pub spend: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

fn usd(pico: u64) -> f64 {
    Money::from_pico(pico).usd()
}

/// The indices where `same` stops holding between neighbours: `rows[start..end]` runs.
fn runs<T>(rows: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || !same(&rows[start], &rows[i]) {
            out.push((start, i));
            start = i;
        }
    }
    out
}

/// `/global/spend/report` in LiteLLM's shapes, from the rows of the date range.
///
/// - `team`: per day, `teams` with `team_name` (the team id; `Unassigned Team` without one),
///   `total_spend` and `metadata`: spend and tokens per model and key.
/// - `customer`: the same per end user (`customer`, null without one).
/// - `api_key`: per key over the whole range, `total_cost`, input and output tokens and
///   `model_details` per model; dearest first.
pub fn spend_report(rows: &[GroupRow], group_by: GroupBy) -> Value {
    let mut answer = Vec::new();
    if group_by == GroupBy::ApiKey {
        for (start, end) in runs(rows, |a, b| a.api_key == b.api_key) {
            let (mut spend, mut prompt, mut completion) = (0u64, 0u64, 0u64);
            let mut details = Vec::with_capacity(end - start);
            for r in &rows[start..end] {
                spend = spend.saturating_add(r.spend);
                prompt += r.prompt_tokens;
                completion += r.completion_tokens;
                details.push(json!({
                    "model": r.model,
                    "total_cost": usd(r.spend),
                    "total_input_tokens": r.prompt_tokens,
                    "total_output_tokens": r.completion_tokens,
                }));
            }
            answer.push(json!({
                "api_key": rows[start].api_key,
                "total_cost": usd(spend),
                "total_input_tokens": prompt,
                "total_output_tokens": completion,
                "model_details": details,
            }));
        }
        return Value::Array(answer);
    }
    let field = if group_by == GroupBy::Team { "teams" } else { "customers" };
    for (day_start, day_end) in runs(rows, |a, b| a.day == b.day) {
        let day = &rows[day_start..day_end];
        let mut groups = Vec::new();
        for (start, end) in runs(day, |a, b| a.group == b.group) {
            let mut total = 0u64;
            let mut metadata = Vec::with_capacity(end - start);
            for r in &day[start..end] {
                total = total.saturating_add(r.spend);
                let tokens = r.prompt_tokens + r.completion_tokens;
                metadata.push(
                    json!({"model": r.model, "api_key": r.api_key, "spend": usd(r.spend), "total_tokens": tokens}),
                );
            }
            let name = day[start].group.as_str();
            groups.push(match group_by {
                GroupBy::Team => json!({
                    "team_name": if name.is_empty() { "Unassigned Team" } else { name },
                    "team_id": opt(name),
                    "total_spend": usd(total),
                    "metadata": metadata,
                }),
                _ => json!({"customer": opt(name), "total_spend": usd(total), "metadata": metadata}),
            });
        }
        answer.push(json!({"group_by_day": format!("{}T00:00:00+00:00", day[0].day), field: groups}));
    }
    Value::Array(answer)
}

/// A ranked row: a key (with its alias), a model group or a tag, its requests and its spend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranked {
    pub name: String,
    /// The key's alias.
    pub detail: String,
    pub count: u64,
    pub spend: u64,
}

/// What the ranked reports answer, each row shaped as LiteLLM does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranking {
    /// `/global/spend/keys`: `api_key`, `key_alias`, `total_spend`.
    Keys,
    /// `/global/spend/models`: `model`, `total_spend`.
    Models,
    /// `/spend/tags`: `individual_request_tag`, `log_count`, `total_spend`.
    Tags,
}

/// A ranked report from its rows (dearest first, as SQL ordered them).
pub fn ranked(rows: &[Ranked], ranking: Ranking) -> Value {
    let mut answer = Vec::with_capacity(rows.len());
    for r in rows {
        answer.push(match ranking {
            Ranking::Keys => json!({"api_key": r.name, "key_alias": opt(&r.detail), "total_spend": usd(r.spend)}),
            Ranking::Models => json!({"model": r.name, "total_spend": usd(r.spend)}),
            Ranking::Tags => {
                json!({"individual_request_tag": r.name, "log_count": r.count, "total_spend": usd(r.spend)})
            }
        });
    }
    Value::Array(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY1: u64 = 1_779_840_000_000; // 2026-05-27T00:00:00Z

    fn row(day: &str, group: &str, model: &str, key: &str, spend: u64) -> GroupRow {
        GroupRow {
            day: day.into(),
            group: group.into(),
            model: model.into(),
            api_key: key.into(),
            spend,
            prompt_tokens: 10,
            completion_tokens: 5,
        }
    }

    #[test]
    fn days_are_utc_and_strict() {
        assert_eq!(day_of(DAY1), "2026-05-27");
        assert_eq!(day_of(DAY1 + DAY_MS - 1), "2026-05-27");
        assert_eq!(day_of(DAY1 + DAY_MS), "2026-05-28");
        assert_eq!(parse_day("2026-05-27"), Some(DAY1));
        assert_eq!(parse_day("2026-5-27"), None);
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("2026-05-27T00:00:00Z"), None);
        assert_eq!(parse_day("yesterday"), None);
        assert_eq!(last_30_days(DAY1 + 29 * DAY_MS + 5), ("2026-05-27".into(), "2026-06-25".into()));
    }

    #[test]
    fn latency_buckets_are_litellms() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(5), 0);
        assert_eq!(latency_bucket(6), 1);
        assert_eq!(latency_bucket(1_000), 7);
        assert_eq!(latency_bucket(600_000), 16);
        assert_eq!(latency_bucket(600_001), LATENCY_BUCKETS_MS.len());
    }

    #[test]
    fn an_event_is_its_spend_log_row_and_survives_the_wire() {
        let row = SpendLogRow {
            call_id: "c".into(),
            api_key: "h".into(),
            model_group: "g".into(),
            deployment: "d".into(),
            prompt_tokens: 3,
            completion_tokens: 4,
            spend: Money::from_pico(u64::MAX - 1),
            start_time: DAY1 + 1_000,
            end_time: DAY1 + 1_250,
            status: 429,
            team_id: Some("t".into()),
            end_user: Some("u\"".into()),
            tags: vec!["x".into(), "y".into(), "x".into()],
            ..SpendLogRow::default()
        };
        let e = ReportEvent::of(&row);
        assert_eq!((e.latency_ms, e.day().as_str(), e.failed()), (250, "2026-05-27", true));
        assert_eq!((e.team_id.as_str(), e.key_alias.as_str(), e.distinct_tags()), ("t", "", vec!["x", "y"]));
        let wire = serde_json::to_string(&e.encode()).unwrap();
        assert_eq!(ReportEvent::decode(&serde_json::from_str(&wire).unwrap()), Some(e));
        assert_eq!(ReportEvent::decode(&json!(["c", 1])), None);
        assert_eq!(ReportEvent::decode(&json!({"call_id": "c"})), None);
    }

    #[test]
    fn the_team_report_groups_days_teams_models_and_keys() {
        let rows = [
            row("2026-05-27", "", "gpt", "k3", 250_000_000_000),
            row("2026-05-27", "team-a", "gpt", "k1", 1_000_000_000_000),
            row("2026-05-27", "team-a", "gpt", "k2", 500_000_000_000),
            row("2026-05-28", "team-a", "claude", "k1", 1),
        ];
        let report = spend_report(&rows, GroupBy::Team);
        assert_eq!(report.as_array().unwrap().len(), 2);
        let day = &report[0];
        assert_eq!(day["group_by_day"], "2026-05-27T00:00:00+00:00");
        let teams = day["teams"].as_array().unwrap();
        assert_eq!(teams[0]["team_name"], "Unassigned Team");
        assert_eq!(teams[0]["team_id"], Value::Null);
        assert_eq!(teams[0]["total_spend"], 0.25);
        assert_eq!(teams[1]["team_name"], "team-a");
        assert_eq!(teams[1]["total_spend"], 1.5);
        assert_eq!(teams[1]["metadata"][0], json!({"model": "gpt", "api_key": "k1", "spend": 1.0, "total_tokens": 15}));
        assert_eq!(report[1]["teams"][0]["total_spend"], 1e-12);
        let customers = spend_report(&rows[..1], GroupBy::Customer);
        assert_eq!(customers[0]["customers"][0]["customer"], Value::Null);
        assert!(spend_report(&[], GroupBy::Team).as_array().unwrap().is_empty());
    }

    #[test]
    fn the_key_report_totals_each_key_over_its_models() {
        let rows = [row("", "", "claude", "k2", 700), row("", "", "gpt", "k2", 100), row("", "", "gpt", "k1", 300)];
        let keys = spend_report(&rows, GroupBy::ApiKey);
        assert_eq!(keys[0]["api_key"], "k2");
        assert_eq!(keys[0]["total_cost"], Money::from_pico(800).usd());
        assert_eq!(keys[0]["total_input_tokens"], 20);
        assert_eq!(keys[0]["model_details"].as_array().unwrap().len(), 2);
        assert_eq!(keys[1]["api_key"], "k1");
    }

    #[test]
    fn ranked_rows() {
        let key = Ranked { name: "k".into(), detail: String::new(), count: 0, spend: 700 };
        let keys = ranked(std::slice::from_ref(&key), Ranking::Keys);
        assert_eq!(keys, json!([{"api_key": "k", "key_alias": null, "total_spend": 7e-10}]));
        assert_eq!(ranked(&[key], Ranking::Models), json!([{"model": "k", "total_spend": 7e-10}]));
        let tag = Ranked { name: "t1".into(), detail: String::new(), count: 2, spend: 1000 };
        let tags = ranked(&[tag], Ranking::Tags);
        assert_eq!(tags, json!([{"individual_request_tag": "t1", "log_count": 2, "total_spend": 1e-9}]));
    }
}
