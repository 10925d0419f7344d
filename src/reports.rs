//! Spend reports: what each request adds to the gateway-wide aggregates, and how the aggregates
//! answer LiteLLM's report endpoints (`/global/spend/report`, `/global/spend/keys`,
//! `/global/spend/models`, `/spend/tags`).
//!
//! Every settled request becomes one [`ReportEvent`]. Events travel in batches to the `Reports`
//! Durable Object, which folds them ([`fold`]) into per-day rows keyed by who and what the
//! request was for, per-day tag counts, and all-time totals and latency buckets for `/metrics`.
//! Money stays in pico-dollars until an answer is shaped; sums are exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ledger::messages::SpendLogRow;
use crate::money::Money;

pub const DAY_MS: u64 = 86_400_000;

/// LiteLLM's latency buckets (`LATENCY_BUCKETS`, seconds), in milliseconds; the last bucket,
/// `+Inf`, has index `LATENCY_BUCKETS_MS.len()`.
pub const LATENCY_BUCKETS_MS: [u64; 17] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 420_000, 600_000];

/// One settled request, as the reports count it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEvent {
    /// The gateway's call id: a batch sent twice counts each call once.
    pub call_id: String,
    /// When the request started (Unix ms): the day it counts on (UTC).
    pub at: u64,
    /// SHA-256 of the key; empty for the master key.
    pub api_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    pub model_group: String,
    /// The deployment that served it (empty when none was reached).
    pub deployment: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend: Money,
    pub status: u16,
    /// From the request's start to its settlement (a stream's end).
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl ReportEvent {
    /// The event of a settled request: its spend log row (whose usage, spend and status are
    /// final) and the time it was settled.
    pub fn of(row: &SpendLogRow) -> Self {
        ReportEvent {
            call_id: row.call_id.clone(),
            at: row.start_time,
            api_key: row.api_key.clone(),
            key_alias: row.key_alias.clone(),
            team_id: row.team_id.clone(),
            user_id: row.user_id.clone(),
            end_user: row.end_user.clone(),
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
}

/// A UTC day, `YYYY-MM-DD`, of Unix milliseconds.
pub fn day_of(ms: u64) -> String {
    crate::time::format_rfc3339(ms)[..10].to_string()
}

/// A `YYYY-MM-DD` query parameter, strictly (LiteLLM's `%Y-%m-%d`): the day's start in Unix ms.
pub fn parse_day(text: &str) -> Option<u64> {
    (text.len() == 10).then(|| crate::time::parse_rfc3339(text)).flatten()
}

/// The bucket a latency falls in (the first whose bound it does not exceed).
pub fn latency_bucket(latency_ms: u64) -> usize {
    LATENCY_BUCKETS_MS.iter().position(|&bound| latency_ms <= bound).unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Who and what a request was for: the dimensions of a per-day row (empty strings for none).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dimensions {
    pub api_key: String,
    pub team_id: String,
    pub user_id: String,
    pub end_user: String,
    pub model_group: String,
    pub deployment: String,
}

/// What a group of requests added up to. Spend in pico-dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend: u64,
    pub latency_ms: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.spend = self.spend.saturating_add(other.spend);
        self.latency_ms += other.latency_ms;
    }

    fn of(event: &ReportEvent) -> Self {
        Counts {
            requests: 1,
            failures: u64::from(event.failed()),
            prompt_tokens: event.prompt_tokens,
            completion_tokens: event.completion_tokens,
            spend: event.spend.pico(),
            latency_ms: event.latency_ms,
        }
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    pub fn usd(&self) -> f64 {
        Money::from_pico(self.spend).usd()
    }
}

/// One per-day row as the object keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyRow {
    pub day: String,
    #[serde(flatten)]
    pub dims: Dimensions,
    /// The key's alias when it was last seen.
    pub key_alias: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Requests and spend under one tag on one day, for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRow {
    pub day: String,
    pub api_key: String,
    pub tag: String,
    pub requests: u64,
    pub spend: u64,
}

/// What a batch of new events adds: per-day rows, tag rows and latency buckets per model group.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    pub daily: BTreeMap<(String, Dimensions), (String, Counts)>,
    pub tags: BTreeMap<(String, String, String), (u64, u64)>,
    pub latency: BTreeMap<(String, usize), u64>,
}

/// Folds a batch of events (each counted once: the object drops those it has applied).
pub fn fold<'a>(events: impl IntoIterator<Item = &'a ReportEvent>) -> Folded {
    let mut folded = Folded::default();
    for event in events {
        let day = day_of(event.at);
        let dims = Dimensions {
            api_key: event.api_key.clone(),
            team_id: event.team_id.clone().unwrap_or_default(),
            user_id: event.user_id.clone().unwrap_or_default(),
            end_user: event.end_user.clone().unwrap_or_default(),
            model_group: event.model_group.clone(),
            deployment: event.deployment.clone(),
        };
        let entry = folded.daily.entry((day.clone(), dims)).or_default();
        if let Some(alias) = &event.key_alias {
            entry.0 = alias.clone();
        }
        entry.1.add(&Counts::of(event));
        let mut tags: Vec<&String> = event.tags.iter().collect();
        tags.sort_unstable();
        tags.dedup();
        for tag in tags {
            let entry = folded.tags.entry((day.clone(), event.api_key.clone(), tag.clone())).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(event.spend.pico());
        }
        *folded.latency.entry((event.model_group.clone(), latency_bucket(event.latency_ms))).or_default() += 1;
    }
    folded
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

/// `/global/spend/report` in LiteLLM's shapes, from the per-day rows of the date range.
///
/// - `team`: per day, `teams` with `team_name` (the team id; `Unassigned Team` without one),
///   `total_spend` and `metadata`: spend and tokens per model and key.
/// - `customer`: the same per end user (`customer`, null without one).
/// - `api_key`: per key over the whole range, `total_cost`, input and output tokens and
///   `model_details` per model; dearest first.
pub fn spend_report(rows: &[DailyRow], group_by: GroupBy) -> Value {
    if group_by == GroupBy::ApiKey {
        return by_api_key(rows);
    }
    // day → group → (model, key) → counts
    let mut days: BTreeMap<&str, BTreeMap<&str, BTreeMap<(&str, &str), Counts>>> = BTreeMap::new();
    for row in rows {
        let group = match group_by {
            GroupBy::Team => row.dims.team_id.as_str(),
            _ => row.dims.end_user.as_str(),
        };
        days.entry(&row.day)
            .or_default()
            .entry(group)
            .or_default()
            .entry((&row.dims.model_group, &row.dims.api_key))
            .or_default()
            .add(&row.counts);
    }
    let answer = days.into_iter().map(|(day, groups)| {
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(group, usage)| {
                let total: u64 = usage.values().map(|c| c.spend).fold(0, u64::saturating_add);
                let metadata: Vec<Value> = usage
                    .iter()
                    .map(|((model, key), c)| {
                        json!({"model": model, "api_key": key, "spend": c.usd(), "total_tokens": c.total_tokens()})
                    })
                    .collect();
                match group_by {
                    GroupBy::Team => json!({
                        "team_name": if group.is_empty() { "Unassigned Team" } else { group },
                        "team_id": opt(group),
                        "total_spend": usd(total),
                        "metadata": metadata,
                    }),
                    _ => json!({"customer": opt(group), "total_spend": usd(total), "metadata": metadata}),
                }
            })
            .collect();
        let field = if group_by == GroupBy::Team { "teams" } else { "customers" };
        json!({"group_by_day": format!("{day}T00:00:00+00:00"), field: groups})
    });
    Value::Array(answer.collect())
}

fn by_api_key(rows: &[DailyRow]) -> Value {
    let mut keys: BTreeMap<&str, BTreeMap<&str, Counts>> = BTreeMap::new();
    for row in rows {
        keys.entry(&row.dims.api_key).or_default().entry(&row.dims.model_group).or_default().add(&row.counts);
    }
    let mut answer: Vec<(u64, Value)> = keys
        .into_iter()
        .map(|(key, models)| {
            let mut total = Counts::default();
            let details: Vec<Value> = models
                .iter()
                .map(|(model, c)| {
                    total.add(c);
                    json!({
                        "model": model,
                        "total_cost": c.usd(),
                        "total_input_tokens": c.prompt_tokens,
                        "total_output_tokens": c.completion_tokens,
                    })
                })
                .collect();
            let value = json!({
                "api_key": key,
                "total_cost": total.usd(),
                "total_input_tokens": total.prompt_tokens,
                "total_output_tokens": total.completion_tokens,
                "model_details": details,
            });
            (total.spend, value)
        })
        .collect();
    answer.sort_by(|a, b| b.0.cmp(&a.0));
    Value::Array(answer.into_iter().map(|(_, v)| v).collect())
}

/// `/global/spend/keys`: each key's spend over the rows (LiteLLM: the last 30 days), dearest
/// first, at most `limit`.
pub fn top_keys(rows: &[DailyRow], limit: Option<usize>) -> Value {
    let mut keys: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for row in rows {
        let entry = keys.entry(&row.dims.api_key).or_insert((0, ""));
        entry.0 = entry.0.saturating_add(row.counts.spend);
        if !row.key_alias.is_empty() {
            entry.1 = &row.key_alias;
        }
    }
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
    let answer = keys
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(key, (spend, alias))| json!({"api_key": key, "key_alias": opt(alias), "total_spend": usd(spend)}));
    Value::Array(answer.collect())
}

/// `/global/spend/models`: each model group's spend over the rows, dearest first.
pub fn top_models(rows: &[DailyRow], limit: usize) -> Value {
    let mut models: BTreeMap<&str, u64> = BTreeMap::new();
    for row in rows.iter().filter(|r| !r.dims.model_group.is_empty()) {
        let spend = models.entry(&row.dims.model_group).or_default();
        *spend = spend.saturating_add(row.counts.spend);
    }
    let mut models: Vec<_> = models.into_iter().collect();
    models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let answer = models.into_iter().take(limit).map(|(model, spend)| json!({"model": model, "total_spend": usd(spend)}));
    Value::Array(answer.collect())
}

/// `/spend/tags`: per tag, the requests that carried it and their spend.
pub fn spend_tags(rows: &[TagRow]) -> Value {
    let mut tags: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for row in rows {
        let entry = tags.entry(&row.tag).or_default();
        entry.0 += row.requests;
        entry.1 = entry.1.saturating_add(row.spend);
    }
    let mut tags: Vec<_> = tags.into_iter().collect();
    tags.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then_with(|| a.0.cmp(b.0)));
    let answer = tags.into_iter().map(|(tag, (count, spend))| {
        json!({"individual_request_tag": tag, "log_count": count, "total_spend": usd(spend)})
    });
    Value::Array(answer.collect())
}

/// What a report reads from the object: the rows of a day range, optionally of one key or one
/// end user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowsQuery {
    /// First and last day, `YYYY-MM-DD`, both included; `None` for no bound.
    pub start_day: Option<String>,
    pub end_day: Option<String>,
    pub api_key: Option<String>,
    pub end_user: Option<String>,
}

/// The day range of the 30 days up to `now_ms` (LiteLLM's `Last30d...` views).
pub fn last_30_days(now_ms: u64) -> RowsQuery {
    RowsQuery {
        start_day: Some(day_of(now_ms.saturating_sub(29 * DAY_MS))),
        end_day: Some(day_of(now_ms)),
        ..RowsQuery::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY1: u64 = 1_779_840_000_000; // 2026-05-27T00:00:00Z

    fn event(call: &str, at: u64, key: &str, spend: u64) -> ReportEvent {
        ReportEvent {
            call_id: call.into(),
            at,
            api_key: key.into(),
            model_group: "gpt".into(),
            deployment: "gpt-a".into(),
            prompt_tokens: 10,
            completion_tokens: 5,
            spend: Money::from_pico(spend),
            status: 200,
            latency_ms: 120,
            ..ReportEvent::default()
        }
    }

    fn rows(folded: &Folded) -> Vec<DailyRow> {
        folded
            .daily
            .iter()
            .map(|((day, dims), (alias, counts))| DailyRow {
                day: day.clone(),
                dims: dims.clone(),
                key_alias: alias.clone(),
                counts: *counts,
            })
            .collect()
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
    fn events_fold_per_day_and_dimensions_exactly() {
        let mut a = event("1", DAY1 + 5, "k1", 1_249_990);
        a.tags = vec!["prod".into(), "prod".into(), "batch".into()];
        a.end_user = Some("alice".into());
        let mut b = event("2", DAY1 + 10, "k1", 3);
        b.end_user = Some("alice".into());
        b.status = 502;
        b.key_alias = Some("svc".into());
        let c = event("3", DAY1 + DAY_MS, "k1", 7);
        let folded = fold([&a, &b, &c]);
        assert_eq!(folded.daily.len(), 2);
        let (alias, day1) = &folded.daily.values().next().unwrap();
        assert_eq!(alias, "svc");
        assert_eq!(
            *day1,
            Counts {
                requests: 2,
                failures: 1,
                prompt_tokens: 20,
                completion_tokens: 10,
                spend: 1_249_993,
                latency_ms: 240
            }
        );
        // A tag repeated in one request counts once.
        let prod = folded.tags[&("2026-05-27".into(), "k1".into(), "prod".into())];
        assert_eq!(prod, (1, 1_249_990));
        assert_eq!(folded.latency[&("gpt".into(), latency_bucket(120))], 3);
    }

    #[test]
    fn the_team_report_groups_days_teams_models_and_keys() {
        let mut a = event("1", DAY1, "k1", 1_000_000_000_000);
        a.team_id = Some("team-a".into());
        let mut b = event("2", DAY1 + 1, "k2", 500_000_000_000);
        b.team_id = Some("team-a".into());
        let c = event("3", DAY1 + 2, "", 250_000_000_000);
        let report = spend_report(&rows(&fold([&a, &b, &c])), GroupBy::Team);
        let day = &report[0];
        assert_eq!(day["group_by_day"], "2026-05-27T00:00:00+00:00");
        let teams = day["teams"].as_array().unwrap();
        assert_eq!(teams[0]["team_name"], "Unassigned Team");
        assert_eq!(teams[0]["team_id"], Value::Null);
        assert_eq!(teams[0]["total_spend"], 0.25);
        assert_eq!(teams[1]["team_name"], "team-a");
        assert_eq!(teams[1]["total_spend"], 1.5);
        assert_eq!(teams[1]["metadata"].as_array().unwrap().len(), 2);
        assert_eq!(teams[1]["metadata"][0], json!({"model": "gpt", "api_key": "k1", "spend": 1.0, "total_tokens": 15}));
    }

    #[test]
    fn the_customer_and_key_reports() {
        let mut a = event("1", DAY1, "k1", 300);
        a.end_user = Some("alice".into());
        let mut b = event("2", DAY1, "k2", 700);
        b.model_group = "claude".into();
        let c = event("3", DAY1 + DAY_MS, "k2", 100);
        let rows = rows(&fold([&a, &b, &c]));
        let customers = spend_report(&rows, GroupBy::Customer);
        assert_eq!(customers.as_array().unwrap().len(), 2);
        assert_eq!(customers[0]["customers"][0]["customer"], Value::Null);
        assert_eq!(customers[0]["customers"][1]["customer"], "alice");
        let keys = spend_report(&rows, GroupBy::ApiKey);
        assert_eq!(keys[0]["api_key"], "k2");
        assert_eq!(keys[0]["total_cost"], Money::from_pico(800).usd());
        assert_eq!(keys[0]["total_input_tokens"], 20);
        assert_eq!(keys[0]["model_details"].as_array().unwrap().len(), 2);
        assert_eq!(keys[1]["api_key"], "k1");
    }

    #[test]
    fn top_keys_models_and_tags() {
        let mut a = event("1", DAY1, "k1", 300);
        a.key_alias = Some("one".into());
        a.tags = vec!["t1".into()];
        let mut b = event("2", DAY1, "k2", 700);
        b.tags = vec!["t1".into(), "t2".into()];
        b.model_group = "claude".into();
        let folded = fold([&a, &b]);
        let rows = rows(&folded);
        let keys = top_keys(&rows, Some(1));
        assert_eq!(keys, json!([{"api_key": "k2", "key_alias": null, "total_spend": Money::from_pico(700).usd()}]));
        assert_eq!(top_keys(&rows, None)[1]["key_alias"], "one");
        assert_eq!(top_models(&rows, 10)[0]["model"], "claude");
        let tags: Vec<TagRow> = folded
            .tags
            .iter()
            .map(|((day, key, tag), (requests, spend))| TagRow {
                day: day.clone(),
                api_key: key.clone(),
                tag: tag.clone(),
                requests: *requests,
                spend: *spend,
            })
            .collect();
        let tags = spend_tags(&tags);
        assert_eq!(tags[0], json!({"individual_request_tag": "t1", "log_count": 2, "total_spend": Money::from_pico(1000).usd()}));
        assert_eq!(tags[1]["individual_request_tag"], "t2");
    }

    #[test]
    fn an_event_is_its_spend_log_row() {
        let row = SpendLogRow {
            call_id: "c".into(),
            api_key: "h".into(),
            model_group: "g".into(),
            deployment: "d".into(),
            prompt_tokens: 3,
            completion_tokens: 4,
            spend: Money::from_pico(9),
            start_time: 1_000,
            end_time: 1_250,
            status: 429,
            team_id: Some("t".into()),
            end_user: Some("u".into()),
            tags: vec!["x".into()],
            ..SpendLogRow::default()
        };
        let e = ReportEvent::of(&row);
        assert_eq!((e.latency_ms, e.at, e.failed()), (250, 1_000, true));
        assert_eq!((e.team_id.as_deref(), e.end_user.as_deref(), e.tags.len()), (Some("t"), Some("u"), 1));
        let last = last_30_days(DAY1 + 29 * DAY_MS + 5);
        assert_eq!((last.start_day.as_deref(), last.end_day.as_deref()), (Some("2026-05-27"), Some("2026-06-25")));
    }
}
