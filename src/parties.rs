//! Teams, internal users and customers (end users): the parties a request draws on besides
//! its key. Each is a record kept in Workers KV under its own prefix (`team:`, `user:`,
//! `customer:`), with LiteLLM's fields, and, when it has limits or a budget, a ledger of its
//! own that every request of its keys (or, for a customer, every request naming it as `user`)
//! is admitted in. This module holds the records, the validation of what `/team/*`,
//! `/user/*` and `/customer/*` take (with `keys`' field checks), and their API views.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::access;
use crate::config::AccessGroup;
use crate::fields::{self, Fields, FromJson};
use crate::json::{ObjectWriter, ToJson};
use crate::keys::{self, bad, optional, text, KV_KEY_MAX_BYTES, MAX_ID, MAX_TEXT};
use crate::ledger::messages;
use crate::ledger::Limits;
use crate::money::Money;
use crate::openai::ApiError;
use crate::time;

/// Workers KV refuses values above 25 MiB.
pub const KV_VALUE_MAX_BYTES: usize = 25 * 1024 * 1024;
/// LiteLLM's roles of an internal user.
const USER_ROLES: [&str; 4] = ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"];
const DEFAULT_USER_ROLE: &str = "internal_user";
/// Roles of a team member.
const MEMBER_ROLES: [&str; 2] = ["admin", "user"];

/// What a `/team/*`, `/user/*` or `/customer/*` call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartyOp {
    New,
    Update,
    Delete,
    Info,
    List,
    Block,
    Unblock,
    MemberAdd,
    MemberDelete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartyKind {
    Team,
    User,
    Customer,
}

impl PartyKind {
    /// The KV prefix and ledger name prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            PartyKind::Team => "team",
            PartyKind::User => "user",
            PartyKind::Customer => "customer",
        }
    }

    /// How refusals name it (LiteLLM's `Team=<id>`, `User=<id>`, `End User=<id>`).
    pub fn label(self) -> &'static str {
        match self {
            PartyKind::Team => "Team",
            PartyKind::User => "User",
            PartyKind::Customer => "End User",
        }
    }

    /// The body field and query parameter that name one.
    pub fn id_field(self) -> &'static str {
        match self {
            PartyKind::Team => "team_id",
            PartyKind::User => "user_id",
            PartyKind::Customer => "user_id",
        }
    }

    /// The path that undoes a block, for the refusal's hint.
    pub fn unblock_path(self) -> &'static str {
        match self {
            PartyKind::Team => "/team/unblock",
            PartyKind::User => "/user/update",
            PartyKind::Customer => "/customer/unblock",
        }
    }

    /// The record's KV key; `None` when the id cannot be one (Workers KV's 512-byte key limit).
    pub fn kv_key(self, id: &str) -> Option<String> {
        let key = format!("{}:{id}", self.prefix());
        (key.len() <= KV_KEY_MAX_BYTES).then_some(key)
    }

    pub fn ledger(self, id: &str) -> String {
        messages::party_ledger(self.prefix(), id)
    }

    /// The fields a body of this kind may set (besides the id).
    fn fields(self) -> &'static [&'static str] {
        const LIMITS: [&str; 5] = ["max_budget", "budget_duration", "rpm_limit", "tpm_limit", "max_parallel_requests"];
        match self {
            PartyKind::Team => &[
                "team_alias",
                "models",
                "metadata",
                "blocked",
                "members_with_roles",
                LIMITS[0],
                LIMITS[1],
                LIMITS[2],
                LIMITS[3],
                LIMITS[4],
            ],
            PartyKind::User => &[
                "user_email",
                "user_role",
                "models",
                "metadata",
                LIMITS[0],
                LIMITS[1],
                LIMITS[2],
                LIMITS[3],
                LIMITS[4],
            ],
            PartyKind::Customer => {
                &["alias", "blocked", "metadata", LIMITS[0], LIMITS[1], LIMITS[2], LIMITS[3], LIMITS[4]]
            }
        }
    }
}

/// A member of a team, with its role there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub role: String,
}

impl FromJson for Member {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let member = Member {
            user_id: f.opt("user_id", fields::string),
            user_email: f.opt("user_email", fields::string),
            role: f.req("role", fields::string),
        };
        f.finish(member)
    }
}

impl ToJson for Member {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Member { user_id, user_email, role } = self;
        let mut o = ObjectWriter::new(out);
        o.field("user_id", user_id).field("user_email", user_email).field("role", role);
        o.end();
    }
}

/// Written and read by hand ([`ToJson`], [`FromJson`]: a smaller wasm); the derive is the tests'
/// reference.
impl ToJson for PartyRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        let PartyRecord {
            id,
            alias,
            email,
            role,
            models,
            max_budget,
            budget_duration,
            rpm_limit,
            tpm_limit,
            max_parallel_requests,
            metadata,
            blocked,
            members,
            created_at,
            updated_at,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("id", id).field("alias", alias).field("email", email).field("role", role).field("models", models);
        o.field("max_budget", max_budget).field("budget_duration", budget_duration);
        o.field("rpm_limit", rpm_limit).field("tpm_limit", tpm_limit);
        o.field("max_parallel_requests", max_parallel_requests).field("metadata", metadata);
        o.field("blocked", blocked).field("members", members);
        o.field("created_at", created_at).field("updated_at", updated_at);
        o.end();
    }
}

impl FromJson for PartyRecord {
    fn from_json(value: &Value) -> Result<Self, String> {
        use crate::fields::{bool, money, object, string, strings, u64};
        let f = Fields::of(value)?;
        let record = PartyRecord {
            id: f.req("id", string),
            alias: f.opt("alias", string),
            email: f.opt("email", string),
            role: f.opt("role", string),
            models: f.or_default("models", strings),
            max_budget: f.opt("max_budget", money),
            budget_duration: f.opt("budget_duration", string),
            rpm_limit: f.opt("rpm_limit", u64),
            tpm_limit: f.opt("tpm_limit", u64),
            max_parallel_requests: f.opt("max_parallel_requests", u64),
            metadata: f.or_default("metadata", object),
            blocked: f.or_default("blocked", bool),
            members: f.or_default("members", |v| v.as_array()?.iter().map(|m| Member::from_json(m).ok()).collect()),
            created_at: f.req("created_at", u64),
            updated_at: f.req("updated_at", u64),
        };
        f.finish(record)
    }
}

impl Member {
    /// One `members_with_roles` entry (or `member_add`'s `member`): a `user_id` or a
    /// `user_email`, and a role (`user` unless given).
    pub fn parse(value: &Value, field: &str) -> Result<Member, ApiError> {
        let Value::Object(m) = value else { return Err(bad(field, "each member must be an object")) };
        if let Some(other) = m.keys().find(|k| !["user_id", "user_email", "role"].contains(&k.as_str())) {
            return Err(bad(field, format!("unknown member field `{other}`")));
        }
        let get = |name: &str| -> Result<Option<String>, ApiError> {
            m.get(name).map_or(Ok(None), |v| optional(v, |v| text(v, field, MAX_ID)))
        };
        let (user_id, user_email) = (get("user_id")?, get("user_email")?);
        if user_id.is_none() && user_email.is_none() {
            return Err(bad(field, "each member needs a `user_id` or a `user_email`"));
        }
        let role = get("role")?.unwrap_or_else(|| "user".into());
        if !MEMBER_ROLES.contains(&role.as_str()) {
            return Err(bad(field, format!("a member's role must be one of {MEMBER_ROLES:?}")));
        }
        Ok(Member { user_id, user_email, role })
    }

    fn same_person(&self, other: &Member) -> bool {
        (self.user_id.is_some() && self.user_id == other.user_id)
            || (self.user_email.is_some() && self.user_email == other.user_email)
    }
}

/// A team, an internal user or a customer, as stored. Money in pico-dollars, times in Unix ms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartyRecord {
    pub id: String,
    /// `team_alias`, or a customer's `alias`.
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    /// The models allowed (empty: all), for teams and users.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub max_budget: Option<Money>,
    #[serde(default)]
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub max_parallel_requests: Option<u64>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub members: Vec<Member>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// The fields a body sets: `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Default, PartialEq)]
pub struct PartyChanges {
    pub alias: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub role: Option<String>,
    pub models: Option<Vec<String>>,
    pub max_budget: Option<Option<Money>>,
    pub budget_duration: Option<Option<String>>,
    pub rpm_limit: Option<Option<u64>>,
    pub tpm_limit: Option<Option<u64>>,
    pub max_parallel_requests: Option<Option<u64>>,
    pub metadata: Option<Map<String, Value>>,
    pub blocked: Option<bool>,
    pub members: Option<Vec<Member>>,
}

/// The id a body names (`team_id`, `user_id`), checked; `None` when absent.
pub fn body_id(kind: PartyKind, body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let field = kind.id_field();
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => check_id(kind, &text(v, field, MAX_ID)?).map(Some),
    }
}

/// An id must fit a KV key once prefixed (counted in UTF-8 bytes).
pub fn check_id(kind: PartyKind, id: &str) -> Result<String, ApiError> {
    match kind.kv_key(id) {
        Some(_) => Ok(id.to_string()),
        None => Err(bad(
            kind.id_field(),
            format!(
                "an id may take at most {} bytes in UTF-8 (Workers KV's key limit)",
                KV_KEY_MAX_BYTES - kind.prefix().len() - 1
            ),
        )),
    }
}

/// Validates a body's fields for `kind`; the id field is left to the handler.
pub fn parse_changes(kind: PartyKind, body: &Map<String, Value>) -> Result<PartyChanges, ApiError> {
    let mut c = PartyChanges::default();
    // The fields a key has too (budget, limits, models, metadata, blocked) go through the
    // keys' own parser: the same checks and the same errors.
    let mut shared = Map::new();
    for (field, value) in body {
        let f = field.as_str();
        if f == kind.id_field() {
            continue;
        }
        if !kind.fields().contains(&f) {
            return Err(bad(f, format!("unknown field `{f}`")));
        }
        match f {
            "team_alias" | "alias" => c.alias = Some(optional(value, |v| text(v, f, MAX_TEXT))?),
            "user_email" => c.email = Some(optional(value, |v| text(v, f, MAX_TEXT))?),
            "user_role" => {
                let role = text(value, f, MAX_TEXT)?;
                if !USER_ROLES.contains(&role.as_str()) {
                    return Err(bad(f, format!("must be one of {USER_ROLES:?}")));
                }
                c.role = Some(role);
            }
            "members_with_roles" => {
                let members = match value {
                    Value::Null => Vec::new(),
                    Value::Array(items) => items.iter().map(|m| Member::parse(m, f)).collect::<Result<_, _>>()?,
                    _ => return Err(bad(f, "must be a list of members")),
                };
                c.members = Some(members);
            }
            _ => {
                shared.insert(field.clone(), value.clone());
            }
        }
    }
    let k = keys::parse_changes(&shared, 0)?;
    c.models = k.models;
    c.max_budget = k.max_budget;
    c.budget_duration = k.budget_duration;
    c.rpm_limit = k.rpm_limit;
    c.tpm_limit = k.tpm_limit;
    c.max_parallel_requests = k.max_parallel_requests;
    c.metadata = k.metadata;
    c.blocked = k.blocked;
    Ok(c)
}

/// The ids a call names: `team_id` / `user_id` (one, made up for a new team or user without
/// one), or a list (`team_ids`, `user_ids`) for deletes and customer blocks.
pub fn target_ids(kind: PartyKind, op: PartyOp, body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let field = kind.id_field();
    match op {
        PartyOp::Delete => id_list(kind, body, if kind == PartyKind::Team { "team_ids" } else { "user_ids" }),
        PartyOp::Block | PartyOp::Unblock if kind == PartyKind::Customer => id_list(kind, body, "user_ids"),
        PartyOp::New => match body_id(kind, body)? {
            Some(id) => Ok(vec![id]),
            None if kind == PartyKind::Customer => Err(bad(field, "the end user's id is required")),
            None => Ok(vec![crate::ids::uuid_v4().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?]),
        },
        _ => {
            let allowed: &[&str] = match op {
                PartyOp::Block | PartyOp::Unblock => &[],
                PartyOp::MemberAdd => &["member"],
                PartyOp::MemberDelete => &["user_id", "user_email"],
                _ => kind.fields(),
            };
            if let Some(other) = body.keys().find(|k| *k != field && !allowed.contains(&k.as_str())) {
                return Err(bad(other, format!("unknown field `{other}`")));
            }
            match body_id(kind, body)? {
                Some(id) => Ok(vec![id]),
                None => Err(ApiError::invalid_request(format!("`{field}` is required"), field)),
            }
        }
    }
}

/// A non-empty list of ids under `field`, and nothing else.
fn id_list(kind: PartyKind, body: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    if let Some(other) = body.keys().find(|k| k.as_str() != field) {
        return Err(bad(other, format!("unknown field `{other}`")));
    }
    match body.get(field) {
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(|v| text(v, field, MAX_ID).and_then(|id| check_id(kind, &id))).collect()
        }
        _ => Err(ApiError::invalid_request(format!("`{field}` (a list of ids) is required"), field)),
    }
}

/// What a write call (new, update, block, unblock, member add or delete) makes of the record
/// it names, given the record as KV has it: the record to store.
pub fn edit(
    kind: PartyKind,
    op: PartyOp,
    existing: Option<PartyRecord>,
    id: &str,
    body: &Map<String, Value>,
    now_ms: u64,
) -> Result<PartyRecord, ApiError> {
    let field = kind.id_field();
    let mut record = match (op, existing) {
        (PartyOp::New, Some(_)) => {
            let message = format!("{}={id} already exists.", kind.label());
            // LiteLLM answers a duplicate user with 409, a duplicate team or customer with 400.
            return Err(match kind {
                PartyKind::User => {
                    ApiError::new(409, crate::openai::ErrorKind::InvalidRequest, message).with_param(field)
                }
                _ => ApiError::invalid_request(message, field),
            });
        }
        (PartyOp::New, None) => PartyRecord::new(kind, id.to_string(), now_ms),
        (_, Some(record)) => record,
        (_, None) => {
            return Err(ApiError::not_found(format!("{}={id} does not exist.", kind.label())).with_param(field))
        }
    };
    match op {
        PartyOp::New | PartyOp::Update => record.apply(parse_changes(kind, body)?, now_ms),
        PartyOp::Block | PartyOp::Unblock => {
            record.blocked = op == PartyOp::Block;
            record.updated_at = now_ms;
        }
        PartyOp::MemberAdd => {
            let members = match body.get("member") {
                Some(Value::Array(items)) if !items.is_empty() => {
                    items.iter().map(|m| Member::parse(m, "member")).collect::<Result<Vec<_>, _>>()?
                }
                Some(m @ Value::Object(_)) => vec![Member::parse(m, "member")?],
                _ => {
                    return Err(ApiError::invalid_request(
                        "`member` (a member or a list of them) is required",
                        "member",
                    ))
                }
            };
            record.add_members(members, now_ms);
        }
        PartyOp::MemberDelete => {
            let mut who = body.clone();
            who.remove(field);
            let gone = Member::parse(&Value::Object(who), "user_id")?;
            if !record.remove_member(&gone, now_ms) {
                return Err(ApiError::not_found(format!("Team={id} has no such member.")).with_param("user_id"));
            }
        }
        PartyOp::Delete | PartyOp::Info | PartyOp::List => {}
    }
    Ok(record)
}

fn set<T>(field: &mut T, change: Option<T>) {
    if let Some(value) = change {
        *field = value;
    }
}

impl PartyRecord {
    pub fn new(kind: PartyKind, id: String, now_ms: u64) -> Self {
        PartyRecord {
            id,
            alias: None,
            email: None,
            role: (kind == PartyKind::User).then(|| DEFAULT_USER_ROLE.to_string()),
            models: Vec::new(),
            max_budget: None,
            budget_duration: None,
            rpm_limit: None,
            tpm_limit: None,
            max_parallel_requests: None,
            metadata: Map::new(),
            blocked: false,
            members: Vec::new(),
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    pub fn apply(&mut self, c: PartyChanges, now_ms: u64) {
        set(&mut self.alias, c.alias);
        set(&mut self.email, c.email);
        if let Some(role) = c.role {
            self.role = Some(role);
        }
        set(&mut self.models, c.models);
        set(&mut self.max_budget, c.max_budget);
        set(&mut self.budget_duration, c.budget_duration);
        set(&mut self.rpm_limit, c.rpm_limit);
        set(&mut self.tpm_limit, c.tpm_limit);
        set(&mut self.max_parallel_requests, c.max_parallel_requests);
        set(&mut self.metadata, c.metadata);
        set(&mut self.blocked, c.blocked);
        set(&mut self.members, c.members);
        self.updated_at = now_ms;
    }

    /// Adds members, replacing the role of one already there.
    pub fn add_members(&mut self, members: Vec<Member>, now_ms: u64) {
        for m in members {
            match self.members.iter_mut().find(|old| old.same_person(&m)) {
                Some(old) => *old = m,
                None => self.members.push(m),
            }
        }
        self.updated_at = now_ms;
    }

    /// Removes the member with this id or email; false if there was none.
    pub fn remove_member(&mut self, gone: &Member, now_ms: u64) -> bool {
        let before = self.members.len();
        self.members.retain(|m| !m.same_person(gone));
        self.updated_at = now_ms;
        self.members.len() != before
    }

    /// What depends on the config: every model named must exist; and Workers KV's limit.
    pub fn validate(&self, configured: &[&str], access_groups: &[AccessGroup]) -> Result<(), ApiError> {
        if let Some(model) = self.models.iter().find(|m| !access::is_known(m, configured, access_groups)) {
            return Err(bad("models", format!("`{model}` is not a configured model or access group (see /v1/models)")));
        }
        let size = crate::json::to_string(self).len();
        if size > KV_VALUE_MAX_BYTES {
            return Err(bad(
                "metadata",
                format!("the record takes {size} bytes; Workers KV allows {KV_VALUE_MAX_BYTES}"),
            ));
        }
        Ok(())
    }

    /// The limits its ledger enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            rpm: self.rpm_limit,
            tpm: self.tpm_limit,
            max_parallel: self.max_parallel_requests,
            max_budget: self.max_budget,
            budget_duration: self.budget_duration.clone(),
            ..Limits::default()
        }
    }

    /// Whether requests may use the model group `group` (a team's or user's `models`).
    pub fn may_use(&self, group: &str, access_groups: &[AccessGroup]) -> bool {
        access::allows(&self.models, group, access_groups)
    }

    /// The record as LiteLLM's API shows one of `kind`, with its ledger's spend.
    pub fn to_api(&self, kind: PartyKind, spend: Money, budget_reset_at: Option<u64>) -> Value {
        // The budget and limits: a team's and a user's own fields, a customer's
        // `litellm_budget_table` (null without any).
        let limits = json!({
            "max_budget": self.max_budget.map(Money::usd),
            "budget_duration": self.budget_duration,
            "budget_reset_at": budget_reset_at.map(time::format_rfc3339),
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "max_parallel_requests": self.max_parallel_requests,
        });
        let Value::Object(mut view) = json!({
            kind.id_field(): self.id,
            "spend": spend.usd(),
            "metadata": self.metadata,
            "created_at": time::format_rfc3339(self.created_at),
            "updated_at": time::format_rfc3339(self.updated_at),
        }) else {
            unreachable!("an object")
        };
        let mut put = |name: &str, value: Value| {
            view.insert(name.to_string(), value);
        };
        let Value::Object(limits) = limits else { unreachable!("an object") };
        match kind {
            PartyKind::Customer => {
                let any = self.limits().needs_admission() || self.budget_duration.is_some();
                put("alias", json!(self.alias));
                put("blocked", Value::Bool(self.blocked));
                put("allowed_model_region", Value::Null);
                put("default_model", Value::Null);
                put("litellm_budget_table", if any { Value::Object(limits) } else { Value::Null });
            }
            PartyKind::Team | PartyKind::User => {
                put("models", json!(self.models));
                for (name, value) in limits {
                    put(&name, value);
                }
                if kind == PartyKind::User {
                    put("user_email", json!(self.email));
                    put("user_role", json!(self.role));
                } else {
                    let ids = |role: &str| -> Value {
                        self.members.iter().filter(|m| m.role == role).filter_map(|m| m.user_id.clone()).collect()
                    };
                    put("team_alias", json!(self.alias));
                    put("blocked", Value::Bool(self.blocked));
                    // Each member as stored (`json!` of the list would compile a serde writer of `Member`).
                    let members = self
                        .members
                        .iter()
                        .map(|m| json!({"user_id": m.user_id, "user_email": m.user_email, "role": m.role}));
                    put("members_with_roles", members.collect());
                    put("admins", ids("admin"));
                    put("members", ids("user"));
                }
            }
        }
        Value::Object(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_595_811_000;
    const MODELS: [&str; 2] = ["databricks-gpt-5-1", "databricks-claude-sonnet-4-5"];

    fn changes(kind: PartyKind, body: Value) -> Result<PartyChanges, ApiError> {
        parse_changes(kind, body.as_object().unwrap())
    }

    #[test]
    fn every_team_field_is_parsed_and_applied() {
        let c = changes(
            PartyKind::Team,
            json!({
                "team_id": "t1", "team_alias": "Search", "models": ["databricks-gpt-5-1"], "max_budget": 2.5,
                "budget_duration": "30d", "rpm_limit": 5, "tpm_limit": 1000, "max_parallel_requests": 2,
                "metadata": {"cost_center": "42"}, "blocked": false,
                "members_with_roles": [{"user_id": "ann", "role": "admin"}, {"user_email": "bob@example.com"}]
            }),
        )
        .unwrap();
        let mut t = PartyRecord::new(PartyKind::Team, "t1".into(), NOW);
        t.apply(c, NOW + 1);
        assert_eq!(t.max_budget, Some(Money::from_pico(2_500_000_000_000)));
        assert_eq!(t.limits().rpm, Some(5));
        assert!(t.limits().needs_admission());
        assert_eq!(t.members[1].role, "user");
        assert_eq!(t.updated_at, NOW + 1);
        t.validate(&MODELS, &[]).unwrap();
        let api = t.to_api(PartyKind::Team, Money::from_pico(1_000_000_000_000), None);
        assert_eq!(api["team_id"], "t1");
        assert_eq!(api["spend"], 1.0);
        assert_eq!(api["max_budget"], 2.5);
        assert_eq!(api["admins"], json!(["ann"]));
        assert_eq!(api["members_with_roles"][1]["user_email"], "bob@example.com");
    }

    #[test]
    fn invalid_fields_are_400_naming_the_field() {
        let cases = [
            (PartyKind::Team, json!({"max_budget": -1}), "max_budget"),
            (PartyKind::Team, json!({"rpm_limit": 1.5}), "rpm_limit"),
            (PartyKind::Team, json!({"budget_duration": "monthly"}), "budget_duration"),
            (PartyKind::Team, json!({"models": "x"}), "models"),
            (PartyKind::Team, json!({"members_with_roles": [{"role": "admin"}]}), "members_with_roles"),
            (PartyKind::Team, json!({"members_with_roles": [{"user_id": "a", "role": "owner"}]}), "members_with_roles"),
            (PartyKind::Team, json!({"user_email": "x@y"}), "user_email"),
            (PartyKind::User, json!({"user_role": "god"}), "user_role"),
            (PartyKind::User, json!({"blocked": true}), "blocked"),
            (PartyKind::Customer, json!({"models": []}), "models"),
            (PartyKind::Customer, json!({"blocked": "yes"}), "blocked"),
            (PartyKind::Customer, json!({"metadata": []}), "metadata"),
        ];
        for (kind, body, field) in cases {
            let e = changes(kind, body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(field)), "{body}");
        }
        let e = body_id(PartyKind::Customer, json!({"user_id": "🙂".repeat(127)}).as_object().unwrap()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("user_id"));
        assert_eq!(body_id(PartyKind::Team, json!({"team_id": 5}).as_object().unwrap()).unwrap_err().status, 400);
        assert_eq!(body_id(PartyKind::Team, json!({}).as_object().unwrap()).unwrap(), None);
    }

    #[test]
    fn models_must_be_configured_and_empty_means_all() {
        let mut u = PartyRecord::new(PartyKind::User, "u".into(), NOW);
        assert_eq!(u.role.as_deref(), Some("internal_user"));
        assert!(u.may_use("anything", &[]));
        u.models = vec!["databricks-gpt-5-1".into()];
        assert!(u.may_use("databricks-gpt-5-1", &[]));
        assert!(!u.may_use("databricks-claude-sonnet-4-5", &[]));
        u.models = vec!["nope".into()];
        assert_eq!(u.validate(&MODELS, &[]).unwrap_err().param.as_deref(), Some("models"));
        u.models = vec![keys::ALL_MODELS.into()];
        assert!(u.may_use("databricks-claude-sonnet-4-5", &[]));
    }

    #[test]
    fn members_are_added_once_and_removed_by_id_or_email() {
        let mut t = PartyRecord::new(PartyKind::Team, "t".into(), NOW);
        let m = |v: Value| Member::parse(&v, "member").unwrap();
        t.add_members(vec![m(json!({"user_id": "a"})), m(json!({"user_email": "b@x"}))], NOW);
        t.add_members(vec![m(json!({"user_id": "a", "role": "admin"}))], NOW);
        assert_eq!(t.members.len(), 2);
        assert_eq!(t.members[0].role, "admin");
        assert!(t.remove_member(&m(json!({"user_email": "b@x"})), NOW));
        assert!(!t.remove_member(&m(json!({"user_id": "zz"})), NOW));
        assert_eq!(t.members.len(), 1);
    }

    #[test]
    fn a_customer_shows_its_budget_in_litellm_s_budget_table() {
        let mut c = PartyRecord::new(PartyKind::Customer, "end-1".into(), NOW);
        assert_eq!(c.to_api(PartyKind::Customer, Money::ZERO, None)["litellm_budget_table"], Value::Null);
        c.apply(changes(PartyKind::Customer, json!({"max_budget": 0.5, "rpm_limit": 3})).unwrap(), NOW);
        let api = c.to_api(PartyKind::Customer, Money::ZERO, None);
        assert_eq!(api["litellm_budget_table"]["max_budget"], 0.5);
        assert_eq!(api["litellm_budget_table"]["rpm_limit"], 3);
        assert_eq!(api["user_id"], "end-1");
        assert_eq!(PartyKind::Customer.kv_key("end-1").as_deref(), Some("customer:end-1"));
        assert_eq!(PartyKind::Customer.ledger("end-1"), "customer:end-1");
        assert!(PartyKind::Customer.kv_key(&"x".repeat(600)).is_none());
    }

    #[test]
    fn write_calls_name_their_targets_and_edit_the_record() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let ids = |kind, op, v| target_ids(kind, op, &body(v));
        assert_eq!(ids(PartyKind::Team, PartyOp::New, json!({"team_id": "t"})).unwrap(), ["t"]);
        assert_eq!(ids(PartyKind::Team, PartyOp::New, json!({})).unwrap()[0].len(), 36, "made up");
        assert_eq!(ids(PartyKind::Customer, PartyOp::New, json!({})).unwrap_err().param.as_deref(), Some("user_id"));
        assert_eq!(ids(PartyKind::Customer, PartyOp::Block, json!({"user_ids": ["a", "b"]})).unwrap(), ["a", "b"]);
        assert_eq!(ids(PartyKind::Customer, PartyOp::Block, json!({"user_ids": []})).unwrap_err().status, 400);
        assert_eq!(
            ids(PartyKind::Team, PartyOp::Delete, json!({"team_ids": ["a"], "x": 1})).unwrap_err().param.as_deref(),
            Some("x")
        );
        assert_eq!(
            ids(PartyKind::Team, PartyOp::Block, json!({"team_id": "t", "blocked": true}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("blocked")
        );
        assert_eq!(
            ids(PartyKind::Team, PartyOp::Update, json!({"rpm_limit": 1})).unwrap_err().param.as_deref(),
            Some("team_id")
        );

        let b = body(json!({"team_id": "t", "rpm_limit": 3}));
        let t = edit(PartyKind::Team, PartyOp::New, None, "t", &b, NOW).unwrap();
        assert_eq!(t.rpm_limit, Some(3));
        let dup = edit(PartyKind::Team, PartyOp::New, Some(t.clone()), "t", &b, NOW).unwrap_err();
        assert_eq!((dup.status, dup.param.as_deref()), (400, Some("team_id")));
        let u = PartyRecord::new(PartyKind::User, "u".into(), NOW);
        assert_eq!(edit(PartyKind::User, PartyOp::New, Some(u), "u", &body(json!({})), NOW).unwrap_err().status, 409);
        assert_eq!(edit(PartyKind::Team, PartyOp::Update, None, "t", &b, NOW).unwrap_err().status, 404);
        let blocked = edit(PartyKind::Team, PartyOp::Block, Some(t.clone()), "t", &body(json!({})), NOW + 5).unwrap();
        assert!(blocked.blocked);
        assert_eq!(blocked.updated_at, NOW + 5);
        let added =
            edit(PartyKind::Team, PartyOp::MemberAdd, Some(t), "t", &body(json!({"member": {"user_id": "a"}})), NOW)
                .unwrap();
        assert_eq!(added.members.len(), 1);
        let gone = body(json!({"team_id": "t", "user_id": "zz"}));
        assert_eq!(
            edit(PartyKind::Team, PartyOp::MemberDelete, Some(added.clone()), "t", &gone, NOW).unwrap_err().status,
            404
        );
        let gone = body(json!({"team_id": "t", "user_id": "a"}));
        assert!(edit(PartyKind::Team, PartyOp::MemberDelete, Some(added), "t", &gone, NOW).unwrap().members.is_empty());
    }

    #[test]
    fn stored_records_read_back() {
        let mut t = PartyRecord::new(PartyKind::Team, "t".into(), NOW);
        t.max_budget = Some(Money::from_pico(u64::MAX / 2));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(PartyRecord::from_json(&serde_json::from_str(&json).unwrap()).unwrap(), t);
        let full = PartyRecord {
            alias: Some("a\"\u{7f}".into()),
            email: Some("e@x".into()),
            role: Some("internal_user".into()),
            models: vec!["m".into()],
            budget_duration: Some("1d".into()),
            rpm_limit: Some(1),
            tpm_limit: Some(2),
            max_parallel_requests: Some(3),
            metadata: json!({"k": [1, "v", null]}).as_object().unwrap().clone(),
            blocked: true,
            members: vec![
                Member { user_id: Some("u".into()), user_email: None, role: "admin".into() },
                Member { user_id: None, user_email: Some("e@x".into()), role: "user".into() },
            ],
            ..t.clone()
        };
        for r in [t, full] {
            let written = crate::json::to_string(&r);
            assert_eq!(written, serde_json::to_string(&r).unwrap(), "written as serde writes it");
            assert_eq!(PartyRecord::from_json(&serde_json::from_str(&written).unwrap()).unwrap(), r);
        }
    }
}
