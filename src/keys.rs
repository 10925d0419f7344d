//! Virtual API keys: the record kept in Workers KV under the key's SHA-256 (LiteLLM's `token`),
//! the validation of every field LiteLLM's `/key/*` API takes, and the checks a request makes
//! with a key. The clear key is never stored: only its hash and an abbreviation (`sk-...abcd`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::access;
use crate::config::AccessGroup;
use crate::fields::{Fields, FromJson};
use crate::json::{self as json_text, ObjectWriter, ToJson};
use crate::money::Money;
use crate::openai::{ApiError, ErrorKind};
use crate::time::{self, Duration};

pub const KEY_PREFIX: &str = "sk-";
pub use crate::access::ALL_MODELS;
pub(crate) const MAX_TEXT: usize = 256;
pub(crate) const MAX_ID: usize = 128;
/// Budgets above ten million dollars are typos (and would not fit a u64 of pico-dollars).
const MAX_BUDGET_USD: f64 = 1e7;
/// Workers KV's own limits: a key (name) of at most 512 bytes, list metadata of at most 1024
/// bytes once serialised. A write past either fails, so they are checked before, field by field.
pub const KV_KEY_MAX_BYTES: usize = 512;
pub const KV_METADATA_MAX_BYTES: usize = 1024;
const ALIAS_INDEX_PREFIX: &str = "alias:";

/// SHA-256 of a key, as lower-case hex: the key's id everywhere but in the caller's hands.
pub fn hash_key(key: &str) -> String {
    crate::ids::hex(&Sha256::digest(key.as_bytes()))
}

/// True for what looks like a key hash rather than a clear key.
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A key's hash, whether it is given as the secret or as the hash itself.
pub fn token_of(ident: &str) -> String {
    if is_hash(ident) {
        ident.to_string()
    } else {
        hash_key(ident)
    }
}

/// A new key: `sk-` and 192 random bits, URL-safe base64.
pub fn new_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", crate::base64::url_safe(&bytes)))
}

/// `sk-...abcd`: enough for a person to tell keys apart, too little to use one.
pub fn abbreviate(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{KEY_PREFIX}...{tail}")
}

/// A virtual key as stored. Money is in pico-dollars, times in Unix milliseconds. Written and
/// read by hand ([`ToJson`], [`FromJson`]: a smaller wasm); the derive is the tests' reference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyRecord {
    /// SHA-256 of the current secret; changes when the key is regenerated. Stored and shown
    /// as LiteLLM's `token`.
    #[serde(rename = "token")]
    pub key_hash: String,
    /// Stable for the key's whole life (regeneration included): names its Durable Object.
    pub key_id: String,
    pub key_name: String,
    pub key_alias: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub expires_at: Option<u64>,
    pub models: Vec<String>,
    pub aliases: BTreeMap<String, String>,
    pub max_budget: Option<Money>,
    pub budget_duration: Option<String>,
    pub soft_budget: Option<Money>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
    pub model_rpm_limit: BTreeMap<String, u64>,
    pub model_tpm_limit: BTreeMap<String, u64>,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub blocked: bool,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// `model_max_budget`: each model group's own budget, in pico-dollars, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_max_budget: BTreeMap<String, u64>,
    /// ... and the period of those that reset (`time_period`). Two maps of types the record
    /// has already (`model_rpm_limit`, `aliases`), so that the wasm gets no reader of its own
    /// for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_budget_period: BTreeMap<String, String>,
}

impl FromJson for KeyRecord {
    fn from_json(value: &Value) -> Result<Self, String> {
        use crate::fields::{bool, money, object, string, string_map, strings, u64, u64_map};
        let f = Fields::of(value)?;
        let record = KeyRecord {
            key_hash: f.req("token", string),
            key_id: f.req("key_id", string),
            key_name: f.req("key_name", string),
            key_alias: f.opt("key_alias", string),
            created_at: f.req("created_at", u64),
            updated_at: f.req("updated_at", u64),
            expires_at: f.opt("expires_at", u64),
            models: f.req("models", strings),
            aliases: f.req("aliases", string_map),
            max_budget: f.opt("max_budget", money),
            budget_duration: f.opt("budget_duration", string),
            soft_budget: f.opt("soft_budget", money),
            rpm_limit: f.opt("rpm_limit", u64),
            tpm_limit: f.opt("tpm_limit", u64),
            max_parallel_requests: f.opt("max_parallel_requests", u64),
            model_rpm_limit: f.req("model_rpm_limit", u64_map),
            model_tpm_limit: f.req("model_tpm_limit", u64_map),
            metadata: f.req("metadata", object),
            tags: f.req("tags", strings),
            blocked: f.req("blocked", bool),
            user_id: f.opt("user_id", string),
            team_id: f.opt("team_id", string),
            model_max_budget: f.or_default("model_max_budget", u64_map),
            model_budget_period: f.or_default("model_budget_period", string_map),
        };
        f.finish(record)
    }
}

impl ToJson for KeyRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        let KeyRecord {
            key_hash,
            key_id,
            key_name,
            key_alias,
            created_at,
            updated_at,
            expires_at,
            models,
            aliases,
            max_budget,
            budget_duration,
            soft_budget,
            rpm_limit,
            tpm_limit,
            max_parallel_requests,
            model_rpm_limit,
            model_tpm_limit,
            metadata,
            tags,
            blocked,
            user_id,
            team_id,
            model_max_budget,
            model_budget_period,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("token", key_hash).field("key_id", key_id).field("key_name", key_name).field("key_alias", key_alias);
        o.field("created_at", created_at).field("updated_at", updated_at).field("expires_at", expires_at);
        o.field("models", models).field("aliases", aliases).field("max_budget", max_budget);
        o.field("budget_duration", budget_duration).field("soft_budget", soft_budget);
        o.field("rpm_limit", rpm_limit).field("tpm_limit", tpm_limit);
        o.field("max_parallel_requests", max_parallel_requests);
        o.field("model_rpm_limit", model_rpm_limit).field("model_tpm_limit", model_tpm_limit);
        o.field("metadata", metadata).field("tags", tags).field("blocked", blocked);
        o.field("user_id", user_id).field("team_id", team_id);
        if !model_max_budget.is_empty() {
            o.field("model_max_budget", model_max_budget);
        }
        if !model_budget_period.is_empty() {
            o.field("model_budget_period", model_budget_period);
        }
        o.end();
    }
}

impl KeyRecord {
    pub fn new(key: &str, key_id: String, now_ms: u64) -> Self {
        KeyRecord {
            key_hash: hash_key(key),
            key_id,
            key_name: abbreviate(key),
            key_alias: None,
            created_at: now_ms,
            updated_at: now_ms,
            expires_at: None,
            models: Vec::new(),
            aliases: BTreeMap::new(),
            max_budget: None,
            budget_duration: None,
            soft_budget: None,
            rpm_limit: None,
            tpm_limit: None,
            max_parallel_requests: None,
            model_rpm_limit: BTreeMap::new(),
            model_tpm_limit: BTreeMap::new(),
            metadata: Map::new(),
            tags: Vec::new(),
            blocked: false,
            user_id: None,
            team_id: None,
            model_max_budget: BTreeMap::new(),
            model_budget_period: BTreeMap::new(),
        }
    }

    /// The same key with a new secret: settings, spend and identity are kept.
    pub fn regenerated(&self, key: &str, now_ms: u64) -> Self {
        KeyRecord { key_hash: hash_key(key), key_name: abbreviate(key), updated_at: now_ms, ..self.clone() }
    }

    pub fn apply(&mut self, changes: KeyChanges, now_ms: u64) {
        let KeyChanges {
            key_alias,
            expires_at,
            models,
            aliases,
            max_budget,
            budget_duration,
            soft_budget,
            rpm_limit,
            tpm_limit,
            max_parallel_requests,
            model_rpm_limit,
            model_tpm_limit,
            metadata,
            tags,
            blocked,
            user_id,
            team_id,
            model_max_budget,
        } = changes;
        set(&mut self.key_alias, key_alias);
        set(&mut self.expires_at, expires_at);
        set(&mut self.models, models);
        set(&mut self.aliases, aliases);
        set(&mut self.max_budget, max_budget);
        set(&mut self.budget_duration, budget_duration);
        set(&mut self.soft_budget, soft_budget);
        set(&mut self.rpm_limit, rpm_limit);
        set(&mut self.tpm_limit, tpm_limit);
        set(&mut self.max_parallel_requests, max_parallel_requests);
        set(&mut self.model_rpm_limit, model_rpm_limit);
        set(&mut self.model_tpm_limit, model_tpm_limit);
        set(&mut self.metadata, metadata);
        set(&mut self.tags, tags);
        set(&mut self.blocked, blocked);
        set(&mut self.user_id, user_id);
        set(&mut self.team_id, team_id);
        if let Some((limits, periods)) = model_max_budget {
            self.model_max_budget = limits;
            self.model_budget_period = periods;
        }
        self.updated_at = now_ms;
    }

    /// Checks what depends on the config: every model named must exist (or be an alias, or in
    /// `models` an access group).
    pub fn validate(&self, configured: &[&str], access_groups: &[AccessGroup]) -> Result<(), ApiError> {
        for (alias, target) in &self.aliases {
            if !configured.contains(&target.as_str()) {
                return Err(bad(
                    "aliases",
                    format!("alias `{alias}` points to `{target}`, which is not a configured model"),
                ));
            }
        }
        for model in &self.models {
            if !access::is_known(model, configured, access_groups) && !self.aliases.contains_key(model) {
                return Err(bad(
                    "models",
                    format!("`{model}` is not a configured model or access group (see /v1/models)"),
                ));
            }
        }
        for (field, limits) in [("model_rpm_limit", &self.model_rpm_limit), ("model_tpm_limit", &self.model_tpm_limit)]
        {
            if let Some(model) = limits.keys().find(|m| !configured.contains(&m.as_str())) {
                return Err(bad(field, format!("`{model}` is not a configured model")));
            }
        }
        if let Some(model) = self.model_max_budget.keys().find(|m| !configured.contains(&m.as_str())) {
            return Err(bad("model_max_budget", format!("`{model}` is not a configured model")));
        }
        Ok(())
    }

    /// Refuses a blocked or expired key.
    pub fn check_usable(&self, now_ms: u64) -> Result<(), ApiError> {
        if self.blocked {
            return Err(ApiError::unauthorized("This API key is blocked. An admin can unblock it with /key/unblock."));
        }
        match self.expires_at {
            Some(at) if at <= now_ms => {
                Err(ApiError::unauthorized(format!("This API key expired at {}.", time::format_rfc3339(at))))
            }
            _ => Ok(()),
        }
    }

    /// The configured model a request for `requested` uses, if this key may use it.
    pub fn resolve_model(&self, requested: &str, access_groups: &[AccessGroup]) -> Result<String, ApiError> {
        let target = self.aliases.get(requested).map(String::as_str).unwrap_or(requested);
        if self.may_use(requested, access_groups) || self.may_use(target, access_groups) {
            Ok(target.to_string())
        } else {
            Err(ApiError::new(
                401,
                ErrorKind::KeyModelAccessDenied,
                format!(
                    "This API key is not allowed to access model={requested}. It can access models={:?}.",
                    self.models
                ),
            )
            .with_param("model"))
        }
    }

    fn may_use(&self, model: &str, access_groups: &[AccessGroup]) -> bool {
        access::allows(&self.models, model, access_groups)
    }

    /// Whether a request of this key may be served by the configured group `group`, directly,
    /// through an access group or through one of its aliases (fallbacks too go only where the
    /// key may go).
    pub fn may_use_group(&self, group: &str, access_groups: &[AccessGroup]) -> bool {
        self.may_use(group, access_groups)
            || self.aliases.iter().any(|(alias, target)| target == group && self.may_use(alias, access_groups))
    }

    /// What the key's ledger lets it use, when `models` restricts it (`None`: all): the
    /// configured groups it may use, and the access groups it names, so that a group the
    /// config adds to one of them later is admitted there too.
    pub fn scope(&self, configured: &[&str], access_groups: &[AccessGroup]) -> Option<Vec<String>> {
        if access::allows_all(&self.models) {
            return None;
        }
        let mut scope: Vec<String> =
            configured.iter().filter(|g| self.may_use_group(g, access_groups)).map(|g| g.to_string()).collect();
        scope.extend(access::named_groups(&self.models, access_groups).into_iter().map(str::to_string));
        Some(scope)
    }

    /// The names this key may send: the allowed configured models and the aliases to them.
    pub fn visible_models<'a>(&'a self, configured: &[&'a str], access_groups: &[AccessGroup]) -> Vec<&'a str> {
        let mut names: Vec<&str> = configured.iter().copied().filter(|m| self.may_use(m, access_groups)).collect();
        for (alias, target) in &self.aliases {
            if !names.contains(&alias.as_str())
                && (self.may_use(alias, access_groups) || self.may_use(target, access_groups))
            {
                names.push(alias);
            }
        }
        names
    }

    /// The key as `/key/*` answers show it (LiteLLM's field names, RFC 3339 times, USD), with
    /// the spend and budget period its ledger reports.
    pub fn to_api(&self, spend: Money, budget_reset_at: Option<u64>) -> Value {
        let usd = |m: Option<Money>| m.map(Money::usd);
        json!({
            "token": self.key_hash,
            "key_name": self.key_name,
            "key_alias": self.key_alias,
            "created_at": time::format_rfc3339(self.created_at),
            "updated_at": time::format_rfc3339(self.updated_at),
            "expires": self.expires_at.map(time::format_rfc3339),
            "models": self.models,
            "aliases": self.aliases,
            "spend": spend.usd(),
            "max_budget": usd(self.max_budget),
            "budget_duration": self.budget_duration,
            "budget_reset_at": budget_reset_at.map(time::format_rfc3339),
            "soft_budget": usd(self.soft_budget),
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "max_parallel_requests": self.max_parallel_requests,
            "model_rpm_limit": self.model_rpm_limit,
            "model_tpm_limit": self.model_tpm_limit,
            "metadata": self.metadata,
            "tags": self.tags,
            "blocked": self.blocked,
            "user_id": self.user_id,
            "team_id": self.team_id,
            "model_max_budget": self.model_max_budget_api(),
        })
    }

    /// `model_max_budget` in dollars, as it was given.
    fn model_max_budget_api(&self) -> Value {
        // Inserted one by one: `collect` into a map sorts first (more code in the wasm).
        let mut budgets = Map::new();
        for (model, limit) in &self.model_max_budget {
            let period = self.model_budget_period.get(model);
            budgets
                .insert(model.clone(), json!({"budget_limit": Money::from_pico(*limit).usd(), "time_period": period}));
        }
        Value::Object(budgets)
    }
}

/// What `/key/list` needs of a key without reading its record, kept as the KV entry's list
/// metadata (short names: KV allows 1024 bytes).
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct ListMeta {
    #[serde(default, rename = "a", skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, rename = "u", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, rename = "t", skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, rename = "c")]
    pub created_at: u64,
    /// The key's stable id (names its ledger).
    #[serde(default, rename = "i")]
    pub key_id: String,
}

/// Read by hand ([`FromJson`]: a smaller wasm); every field may be missing.
impl FromJson for ListMeta {
    fn from_json(value: &Value) -> Result<Self, String> {
        use crate::fields::{string, u64};
        let f = Fields::of(value)?;
        let meta = ListMeta {
            alias: f.opt("a", string),
            user_id: f.opt("u", string),
            team_id: f.opt("t", string),
            created_at: f.or_default("c", u64),
            key_id: f.or_default("i", string),
        };
        f.finish(meta)
    }
}

/// Written by hand ([`ToJson`]: a smaller wasm), absent fields left out.
impl ToJson for ListMeta {
    fn write_json(&self, out: &mut Vec<u8>) {
        let ListMeta { alias, user_id, team_id, created_at, key_id } = self;
        let mut o = ObjectWriter::new(out);
        o.some("a", alias).some("u", user_id).some("t", team_id).field("c", created_at).field("i", key_id);
        o.end();
    }
}

impl KeyRecord {
    pub fn list_meta(&self) -> ListMeta {
        ListMeta {
            alias: self.key_alias.clone(),
            user_id: self.user_id.clone(),
            team_id: self.team_id.clone(),
            created_at: self.created_at,
            key_id: self.key_id.clone(),
        }
    }

    /// Checks what Workers KV would refuse to store: the alias index's key name, and the list
    /// metadata, whose size the longest of `key_alias`, `user_id` and `team_id` is blamed for.
    pub fn check_kv_limits(&self) -> Result<(), ApiError> {
        if let Some(alias) = &self.key_alias {
            check_alias(alias, "key_alias")?;
        }
        let size = json_len(&self.list_meta());
        if size > KV_METADATA_MAX_BYTES {
            let fields = [("key_alias", &self.key_alias), ("user_id", &self.user_id), ("team_id", &self.team_id)];
            let field = fields.iter().max_by_key(|(_, v)| json_len(v)).map_or("key_alias", |(f, _)| *f);
            return Err(bad(
                field,
                format!(
                    "key_alias, user_id and team_id together take {size} bytes in the key's list metadata; \
                     Workers KV allows {KV_METADATA_MAX_BYTES}. Shorten `{field}`."
                ),
            ));
        }
        Ok(())
    }
}

/// KV key names of the key store: a key's record, the alias index, a revoked secret's tombstone.
pub fn record_kv_key(hash: &str) -> String {
    format!("key:{hash}")
}

pub fn alias_kv_key(alias: &str) -> String {
    format!("{ALIAS_INDEX_PREFIX}{alias}")
}

pub fn revoked_kv_key(hash: &str) -> String {
    format!("revoked:{hash}")
}

/// An alias to store or look up (`field` names where it came from): its index key must fit
/// Workers KV's key limit, counted in UTF-8 bytes (a non-ASCII character takes 2 to 4).
pub fn check_alias(alias: &str, field: &str) -> Result<(), ApiError> {
    if alias_kv_key(alias).len() > KV_KEY_MAX_BYTES {
        let max = KV_KEY_MAX_BYTES - ALIAS_INDEX_PREFIX.len();
        return Err(bad(
            field,
            format!(
                "an alias may take at most {max} bytes in UTF-8 (Workers KV's key limit); this one takes {}",
                alias.len()
            ),
        ));
    }
    Ok(())
}

fn json_len(value: &impl ToJson) -> usize {
    json_text::to_string(value).len()
}

fn set<T>(field: &mut T, change: Option<T>) {
    if let Some(value) = change {
        *field = value;
    }
}

/// The fields a `/key/generate`, `/key/update` or `/key/regenerate` body sets; `None` leaves a
/// field as it is, `Some(None)` clears it.
#[derive(Debug, Default, PartialEq)]
pub struct KeyChanges {
    pub key_alias: Option<Option<String>>,
    pub expires_at: Option<Option<u64>>,
    pub models: Option<Vec<String>>,
    pub aliases: Option<BTreeMap<String, String>>,
    pub max_budget: Option<Option<Money>>,
    pub budget_duration: Option<Option<String>>,
    pub soft_budget: Option<Option<Money>>,
    pub rpm_limit: Option<Option<u64>>,
    pub tpm_limit: Option<Option<u64>>,
    pub max_parallel_requests: Option<Option<u64>>,
    pub model_rpm_limit: Option<BTreeMap<String, u64>>,
    pub model_tpm_limit: Option<BTreeMap<String, u64>>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    pub blocked: Option<bool>,
    pub user_id: Option<Option<String>>,
    pub team_id: Option<Option<String>>,
    pub model_max_budget: Option<ModelBudgets>,
}

/// `model_max_budget` as a key keeps it: the budgets (pico-dollars), and the periods of those
/// that reset.
pub type ModelBudgets = (BTreeMap<String, u64>, BTreeMap<String, String>);

/// Fields that identify or name the key rather than change it; the handler reads them.
const IDENTITY_FIELDS: [&str; 2] = ["key", "new_key"];

/// Validates a request body's key fields. `now_ms` turns `duration` into an expiry.
pub fn parse_changes(body: &Map<String, Value>, now_ms: u64) -> Result<KeyChanges, ApiError> {
    let mut c = KeyChanges::default();
    if body.contains_key("duration") && body.contains_key("expires") {
        return Err(bad("expires", "give `duration` or `expires`, not both"));
    }
    for (field, value) in body {
        let f = field.as_str();
        match f {
            "key_alias" => c.key_alias = Some(optional(value, |v| text(v, f, MAX_TEXT))?),
            "duration" => {
                c.expires_at = Some(optional(value, |v| duration(v, f).map(|d| d.after(now_ms)))?);
            }
            "expires" => {
                let at = optional(value, |v| match v.as_str().and_then(time::parse_rfc3339) {
                    Some(at) if at > now_ms => Ok(at),
                    Some(_) => Err(bad(f, "must be in the future")),
                    None => Err(bad(f, "must be an RFC 3339 time such as 2027-01-31T00:00:00Z")),
                })?;
                c.expires_at = Some(at);
            }
            "models" => c.models = Some(string_list(value, f)?),
            "tags" => c.tags = Some(string_list(value, f)?),
            "aliases" => c.aliases = Some(string_map(value, f, |v, p| text(v, p, MAX_TEXT))?),
            "max_budget" => c.max_budget = Some(optional(value, |v| usd(v, f))?),
            "soft_budget" => c.soft_budget = Some(optional(value, |v| usd(v, f))?),
            "budget_duration" => {
                c.budget_duration = Some(optional(value, |v| {
                    duration(v, f)?;
                    text(v, f, 16)
                })?)
            }
            "rpm_limit" => c.rpm_limit = Some(optional(value, |v| count(v, f))?),
            "tpm_limit" => c.tpm_limit = Some(optional(value, |v| count(v, f))?),
            "max_parallel_requests" => c.max_parallel_requests = Some(optional(value, |v| count(v, f))?),
            "model_rpm_limit" => c.model_rpm_limit = Some(string_map(value, f, count)?),
            "model_tpm_limit" => c.model_tpm_limit = Some(string_map(value, f, count)?),
            "metadata" => {
                c.metadata = Some(match value {
                    Value::Null => Map::new(),
                    Value::Object(m) => m.clone(),
                    _ => return Err(bad(f, "must be an object")),
                })
            }
            "blocked" => c.blocked = Some(value.as_bool().ok_or_else(|| bad(f, "must be true or false"))?),
            "user_id" => c.user_id = Some(optional(value, |v| text(v, f, MAX_ID))?),
            "team_id" => c.team_id = Some(optional(value, |v| text(v, f, MAX_ID))?),
            "model_max_budget" => c.model_max_budget = Some(model_budgets(value, f)?),
            _ if IDENTITY_FIELDS.contains(&f) => {}
            _ => return Err(bad(f, format!("unknown field `{f}`"))),
        }
    }
    if let (Some(Some(soft)), Some(Some(max))) = (c.soft_budget, c.max_budget) {
        if soft > max {
            return Err(bad("soft_budget", "must not be above max_budget"));
        }
    }
    Ok(c)
}

/// `model_max_budget`: `{"<model>": {"budget_limit": 0.05, "time_period": "1d"}}`, each entry
/// a `budget_limit` (USD, 0 or more) and an optional `time_period` (LiteLLM's other names for
/// them, `max_budget` and `budget_duration`, too); `null` is none.
fn model_budgets(value: &Value, field: &str) -> Result<ModelBudgets, ApiError> {
    let (mut limits, mut periods) = (BTreeMap::new(), BTreeMap::new());
    let entries = match value {
        Value::Null => return Ok((limits, periods)),
        Value::Object(entries) => entries,
        _ => return Err(bad(field, "must be an object")),
    };
    for (model, entry) in entries {
        let (limit, period) = model_budget(entry, field)?;
        limits.insert(model.clone(), limit.pico());
        if let Some(period) = period {
            periods.insert(model.clone(), period);
        }
    }
    Ok((limits, periods))
}

/// One model's entry of `model_max_budget`.
fn model_budget(value: &Value, field: &str) -> Result<(Money, Option<String>), ApiError> {
    let entry = value.as_object().ok_or_else(|| {
        bad(field, "each model's entry must be an object such as {\"budget_limit\": 0.05, \"time_period\": \"1d\"}")
    })?;
    let (mut limit, mut period) = (None, None);
    for (name, v) in entry {
        match name.as_str() {
            // LiteLLM takes the limit as a number or a numeric string.
            "budget_limit" | "max_budget" => {
                // Read by serde_json, whose number parser is in the module already (core's
                // `str::parse::<f64>` would add about 20 KB of tables and code).
                let number = v.as_str().and_then(|s| crate::json::from_str::<Value>(s.trim()).ok());
                limit = Some(usd(number.as_ref().unwrap_or(v), field)?);
            }
            "time_period" | "budget_duration" => {
                period = optional(v, |v| {
                    duration(v, field)?;
                    text(v, field, 16)
                })?;
            }
            other => return Err(bad(field, format!("unknown field `{other}` in a model's budget"))),
        }
    }
    let budget_limit = limit.ok_or_else(|| bad(field, "each model's entry needs `budget_limit` (USD)"))?;
    Ok((budget_limit, period))
}

/// A caller-chosen key (`key` or `new_key`): `sk-` and printable ASCII, no spaces.
pub fn chosen_key(value: &Value, field: &str) -> Result<String, ApiError> {
    let key = value.as_str().ok_or_else(|| bad(field, "must be a string"))?;
    if !key.starts_with(KEY_PREFIX)
        || key.len() < 8
        || key.len() > MAX_TEXT
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad(field, "must start with `sk-` and be 8 to 256 printable characters without spaces"));
    }
    Ok(key.to_string())
}

pub(crate) fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(format!("Invalid `{field}`: {}", message.into()), field)
}

/// `null` clears a field; anything else must parse.
pub(crate) fn optional<T>(
    value: &Value,
    parse: impl FnOnce(&Value) -> Result<T, ApiError>,
) -> Result<Option<T>, ApiError> {
    match value {
        Value::Null => Ok(None),
        v => parse(v).map(Some),
    }
}

pub(crate) fn text(value: &Value, field: &str, max: usize) -> Result<String, ApiError> {
    match value.as_str().map(str::trim) {
        Some(s) if !s.is_empty() && s.chars().count() <= max => Ok(s.to_string()),
        Some(_) => Err(bad(field, format!("must be 1 to {max} characters"))),
        None => Err(bad(field, "must be a string")),
    }
}

fn duration(value: &Value, field: &str) -> Result<Duration, ApiError> {
    value
        .as_str()
        .and_then(Duration::parse)
        .ok_or_else(|| bad(field, "must be a duration such as 30s, 5m, 1h, 30d, 2w or 1mo"))
}

fn usd(value: &Value, field: &str) -> Result<Money, ApiError> {
    match value.as_f64().filter(|x| *x <= MAX_BUDGET_USD).and_then(Money::from_usd) {
        Some(money) => Ok(money),
        _ => Err(bad(field, "must be a number of US dollars, 0 or more")),
    }
}

fn count(value: &Value, field: &str) -> Result<u64, ApiError> {
    value.as_u64().ok_or_else(|| bad(field, "must be a whole number, 0 or more"))
}

fn string_list(value: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(|v| text(v, field, MAX_TEXT)).collect(),
        _ => Err(bad(field, "must be a list of strings")),
    }
}

fn string_map<T>(
    value: &Value,
    field: &str,
    parse: impl Fn(&Value, &str) -> Result<T, ApiError>,
) -> Result<BTreeMap<String, T>, ApiError> {
    match value {
        Value::Null => Ok(BTreeMap::new()),
        // Inserted one by one rather than collected: `collect` into a BTreeMap sorts first, a
        // copy of the sort per `T` in the wasm. The keys are unique already.
        Value::Object(m) => {
            let mut map = BTreeMap::new();
            for (k, v) in m {
                map.insert(k.clone(), parse(v, field)?);
            }
            Ok(map)
        }
        _ => Err(bad(field, "must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_595_811_000;
    const MODELS: [&str; 2] = ["databricks-gpt-5-1", "databricks-claude-sonnet-4-5"];

    fn changes(body: Value) -> Result<KeyChanges, ApiError> {
        parse_changes(body.as_object().unwrap(), NOW)
    }

    fn record_with(body: Value) -> KeyRecord {
        let mut r = KeyRecord::new("sk-test-key-1234", "id-1".into(), NOW);
        r.apply(changes(body).unwrap(), NOW);
        r
    }

    #[test]
    fn the_scope_names_every_group_the_key_reaches_directly_or_by_alias() {
        let all = record_with(json!({}));
        assert_eq!(all.scope(&MODELS, &[]), None);
        assert!(all.may_use_group("databricks-gpt-5-1", &[]));
        let everything = record_with(json!({"models": ["all-proxy-models"]}));
        assert_eq!(everything.scope(&MODELS, &[]), None);
        let narrow = record_with(json!({"models": ["fast"], "aliases": {"fast": "databricks-gpt-5-1"}}));
        assert_eq!(narrow.scope(&MODELS, &[]), Some(vec!["databricks-gpt-5-1".to_string()]));
        assert!(narrow.may_use_group("databricks-gpt-5-1", &[]));
        assert!(!narrow.may_use_group("databricks-claude-sonnet-4-5", &[]), "a fallback outside the key");
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(is_hash(&hash_key("x")));
        assert!(!is_hash("sk-1234"));
        assert_eq!(token_of("sk-1234"), hash_key("sk-1234"));
        assert_eq!(token_of(&hash_key("x")), hash_key("x"));
    }

    #[test]
    fn new_keys_are_random_url_safe_and_long() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("sk-"));
        assert_eq!(a.len(), 3 + 32);
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(abbreviate("sk-abcdefgh"), "sk-...efgh");
    }

    #[test]
    fn every_field_is_parsed() {
        let c = changes(json!({
            "key_alias": "team-a", "duration": "1h", "models": ["databricks-gpt-5-1"],
            "aliases": {"gpt": "databricks-gpt-5-1"}, "max_budget": 10.5, "soft_budget": 5,
            "budget_duration": "30d", "rpm_limit": 10, "tpm_limit": 1000, "max_parallel_requests": 2,
            "model_rpm_limit": {"databricks-gpt-5-1": 5}, "model_tpm_limit": {"databricks-gpt-5-1": 500},
            "metadata": {"owner": "x"}, "tags": ["a"], "blocked": false, "user_id": "u1", "team_id": null,
            "key": "sk-ignored-here"
        }))
        .unwrap();
        assert_eq!(c.key_alias, Some(Some("team-a".into())));
        assert_eq!(c.expires_at, Some(Some(NOW + 3_600_000)));
        assert_eq!(c.max_budget, Some(Some(Money::from_pico(10_500_000_000_000))));
        assert_eq!(c.soft_budget, Some(Some(Money::from_pico(5_000_000_000_000))));
        assert_eq!(c.budget_duration, Some(Some("30d".into())));
        assert_eq!(c.rpm_limit, Some(Some(10)));
        assert_eq!(c.model_tpm_limit.unwrap()["databricks-gpt-5-1"], 500);
        assert_eq!(c.team_id, Some(None));
        assert_eq!(c.blocked, Some(false));
    }

    #[test]
    fn invalid_fields_are_400_naming_the_field() {
        let cases = [
            (json!({"key_alias": 5}), "key_alias"),
            (json!({"key_alias": ""}), "key_alias"),
            (json!({"duration": "forever"}), "duration"),
            (json!({"duration": "1h", "expires": "2030-01-01T00:00:00Z"}), "expires"),
            (json!({"expires": "2001-01-01T00:00:00Z"}), "expires"),
            (json!({"expires": "next week"}), "expires"),
            (json!({"models": "databricks-gpt-5-1"}), "models"),
            (json!({"models": [1]}), "models"),
            (json!({"aliases": ["x"]}), "aliases"),
            (json!({"max_budget": -1}), "max_budget"),
            (json!({"max_budget": "10"}), "max_budget"),
            (json!({"soft_budget": 20, "max_budget": 10}), "soft_budget"),
            (json!({"budget_duration": "monthly"}), "budget_duration"),
            (json!({"rpm_limit": 1.5}), "rpm_limit"),
            (json!({"tpm_limit": -3}), "tpm_limit"),
            (json!({"max_parallel_requests": "2"}), "max_parallel_requests"),
            (json!({"model_rpm_limit": {"m": -1}}), "model_rpm_limit"),
            (json!({"model_tpm_limit": 7}), "model_tpm_limit"),
            (json!({"metadata": []}), "metadata"),
            (json!({"tags": [null]}), "tags"),
            (json!({"blocked": "yes"}), "blocked"),
            (json!({"user_id": 1}), "user_id"),
            (json!({"team_id": "x".repeat(200)}), "team_id"),
            (json!({"permissions": {}}), "permissions"),
        ];
        for (body, field) in cases {
            let e = changes(body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(field)), "{body}");
        }
    }

    #[test]
    fn chosen_keys_must_look_like_keys() {
        assert_eq!(chosen_key(&json!("sk-my-own-key"), "key").unwrap(), "sk-my-own-key");
        for bad in [json!("my-key-123"), json!("sk-1"), json!("sk-with space"), json!(12)] {
            assert_eq!(chosen_key(&bad, "key").unwrap_err().param.as_deref(), Some("key"), "{bad}");
        }
    }

    #[test]
    fn models_and_aliases_must_exist_in_the_config() {
        assert!(record_with(json!({"models": ["databricks-gpt-5-1", "all-proxy-models"]}))
            .validate(&MODELS, &[])
            .is_ok());
        let e = record_with(json!({"models": ["gpt-4"]})).validate(&MODELS, &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("models"));
        let e = record_with(json!({"aliases": {"gpt-4": "nope"}})).validate(&MODELS, &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("aliases"));
        let ok = record_with(json!({"aliases": {"gpt-4": "databricks-gpt-5-1"}, "models": ["gpt-4"]}));
        assert!(ok.validate(&MODELS, &[]).is_ok());
        let e = record_with(json!({"model_rpm_limit": {"nope": 1}})).validate(&MODELS, &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model_rpm_limit"));
    }

    #[test]
    fn model_access_follows_models_and_aliases() {
        let open = record_with(json!({}));
        assert_eq!(open.resolve_model("databricks-gpt-5-1", &[]).unwrap(), "databricks-gpt-5-1");
        assert_eq!(open.visible_models(&MODELS, &[]), MODELS);

        let limited = record_with(
            json!({"models": ["databricks-gpt-5-1"], "aliases": {"fast": "databricks-gpt-5-1", "smart": "databricks-claude-sonnet-4-5"}}),
        );
        assert_eq!(limited.resolve_model("fast", &[]).unwrap(), "databricks-gpt-5-1");
        let e = limited.resolve_model("databricks-claude-sonnet-4-5", &[]).unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (401, "key_model_access_denied"));
        assert!(limited.resolve_model("smart", &[]).is_err());
        assert_eq!(limited.visible_models(&MODELS, &[]), vec!["databricks-gpt-5-1", "fast"]);
    }

    #[test]
    fn blocked_and_expired_keys_are_refused() {
        assert!(record_with(json!({})).check_usable(NOW).is_ok());
        let e = record_with(json!({"blocked": true})).check_usable(NOW).unwrap_err();
        assert!(e.message.contains("blocked"));
        let expiring = record_with(json!({"duration": "30s"}));
        assert!(expiring.check_usable(NOW + 29_000).is_ok());
        let e = expiring.check_usable(NOW + 30_000).unwrap_err();
        assert_eq!(e.status, 401);
        assert!(e.message.contains("expired at"));
    }

    #[test]
    fn updates_change_only_what_they_name_and_null_clears() {
        let mut r = record_with(json!({"key_alias": "a", "rpm_limit": 5, "tags": ["x"]}));
        r.apply(changes(json!({"rpm_limit": null, "tpm_limit": 9})).unwrap(), NOW + 1);
        assert_eq!((r.key_alias.as_deref(), r.rpm_limit, r.tpm_limit), (Some("a"), None, Some(9)));
        assert_eq!(r.tags, vec!["x"]);
        assert_eq!(r.updated_at, NOW + 1);
    }

    #[test]
    fn regeneration_keeps_identity_and_settings() {
        let r = record_with(json!({"key_alias": "a", "max_budget": 3}));
        let n = r.regenerated("sk-brand-new-key", NOW + 5);
        assert_eq!((n.key_id.as_str(), n.key_alias.as_deref(), n.max_budget), ("id-1", Some("a"), r.max_budget));
        assert_ne!(n.key_hash, r.key_hash);
        assert_eq!(n.key_hash, hash_key("sk-brand-new-key"));
        assert_eq!(n.key_name, "sk-...-key");
    }

    #[test]
    fn aliases_must_fit_a_kv_key_counted_in_bytes() {
        let max = KV_KEY_MAX_BYTES - "alias:".len();
        assert!(check_alias(&"a".repeat(max), "key_alias").is_ok());
        let e = check_alias(&"a".repeat(max + 1), "key_aliases").unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("key_aliases")));
        assert_eq!(alias_kv_key(&"a".repeat(max)).len(), KV_KEY_MAX_BYTES);
        // 256 characters pass the field's own check, but not in 2-byte UTF-8.
        let accented = "é".repeat(256);
        let e = record_with(json!({ "key_alias": accented })).check_kv_limits().unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("key_alias")));
        assert!(record_with(json!({ "key_alias": "é".repeat(250) })).check_kv_limits().is_ok());
    }

    #[test]
    fn list_metadata_must_fit_kv_and_the_longest_field_is_named() {
        // The longest values each field takes, in ASCII, fit together.
        let ascii =
            record_with(json!({"key_alias": "a".repeat(256), "user_id": "u".repeat(128), "team_id": "t".repeat(128)}));
        assert!(json_len(&ascii.list_meta()) <= KV_METADATA_MAX_BYTES);
        assert!(ascii.check_kv_limits().is_ok());
        // 4-byte characters do not.
        let emoji = "\u{1F600}";
        for (body, field) in [
            (
                json!({"key_alias": "a".repeat(200), "user_id": emoji.repeat(128), "team_id": emoji.repeat(80)}),
                "user_id",
            ),
            (
                json!({"key_alias": "a".repeat(100), "team_id": emoji.repeat(128), "user_id": emoji.repeat(100)}),
                "team_id",
            ),
            (
                json!({"key_alias": emoji.repeat(120), "user_id": emoji.repeat(100), "team_id": "t".repeat(100)}),
                "key_alias",
            ),
        ] {
            let r = record_with(body.clone());
            assert!(json_len(&r.list_meta()) > KV_METADATA_MAX_BYTES, "{body}");
            let e = r.check_kv_limits().unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(field)), "{body}");
        }
        // Escapes count: a control character is six bytes once serialised.
        let escaped =
            record_with(json!({"user_id": format!("u{}", "\u{1}".repeat(127)), "team_id": "\u{1}".repeat(128)}));
        assert_eq!(escaped.check_kv_limits().unwrap_err().status, 400);
    }

    #[test]
    fn records_are_written_as_serde_writes_them() {
        let full = KeyRecord {
            key_alias: Some("al\"ias".into()),
            expires_at: Some(NOW + 1),
            models: vec!["a".into(), "b".into()],
            aliases: [("x".to_string(), "a".to_string())].into(),
            max_budget: Some(Money::from_pico(u64::MAX)),
            budget_duration: Some("30d".into()),
            soft_budget: Some(Money::ZERO),
            rpm_limit: Some(1),
            tpm_limit: Some(2),
            max_parallel_requests: Some(3),
            model_rpm_limit: [("a".to_string(), 4)].into(),
            model_tpm_limit: [("b".to_string(), 5)].into(),
            metadata: json!({"team": "é\n", "n": [1.5, -2, null, {"z": true}]}).as_object().unwrap().clone(),
            tags: vec!["t".into()],
            blocked: true,
            user_id: Some("u".into()),
            team_id: Some("t".into()),
            model_max_budget: [("a".to_string(), 7)].into(),
            model_budget_period: [("a".to_string(), "1d".to_string())].into(),
            ..KeyRecord::new("sk-test-key-1234", "id-1".into(), NOW)
        };
        for r in [KeyRecord::new("sk-test-key-1234", "id-1".into(), NOW), full] {
            let written = json_text::to_string(&r);
            assert_eq!(written, serde_json::to_string(&r).unwrap());
            assert_eq!(KeyRecord::from_json(&serde_json::from_str(&written).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn list_metadata_uses_short_names() {
        let r = record_with(json!({"key_alias": "a", "user_id": "u"}));
        let meta = serde_json::to_value(r.list_meta()).unwrap();
        assert_eq!(meta, json!({"a": "a", "u": "u", "c": NOW, "i": "id-1"}));
        for m in [r.list_meta(), ListMeta::default(), record_with(json!({"team_id": "t\"é"})).list_meta()] {
            assert_eq!(json_text::to_string(&m), serde_json::to_string(&m).unwrap(), "written as serde writes it");
        }
        assert_eq!(ListMeta::from_json(&meta).unwrap(), r.list_meta());
        assert_eq!(ListMeta::from_json(&json!({})).unwrap(), ListMeta::default(), "every field may be missing");
        assert_eq!(record_kv_key("h"), "key:h");
        assert_eq!(revoked_kv_key("h"), "revoked:h");
    }

    #[test]
    fn the_api_view_uses_litellm_names_and_dollars() {
        let v = record_with(json!({"max_budget": 2.5, "duration": "1h"}))
            .to_api(Money::from_pico(1_250_000_000_000), Some(NOW));
        assert_eq!(v["max_budget"], 2.5);
        assert_eq!(v["spend"], 1.25);
        assert_eq!(v["budget_reset_at"], time::format_rfc3339(NOW));
        assert_eq!(v["expires"], time::format_rfc3339(NOW + 3_600_000));
        assert_eq!(v["token"], hash_key("sk-test-key-1234"));
        assert_eq!(v["key_name"], "sk-...1234");
        assert!(!v.to_string().contains("sk-test-key-1234"));
    }

    fn access_groups() -> Vec<AccessGroup> {
        vec![AccessGroup { name: "claude-only".into(), models: vec!["databricks-claude-sonnet-4-5".into()] }]
    }

    #[test]
    fn an_access_group_in_models_reaches_its_groups_everywhere() {
        let g = access_groups();
        let r = record_with(json!({"models": ["claude-only"], "aliases": {"smart": "databricks-claude-sonnet-4-5"}}));
        assert!(r.validate(&MODELS, &g).is_ok());
        assert_eq!(
            r.validate(&MODELS, &[]).unwrap_err().param.as_deref(),
            Some("models"),
            "unknown without the config's"
        );
        assert_eq!(r.resolve_model("databricks-claude-sonnet-4-5", &g).unwrap(), "databricks-claude-sonnet-4-5");
        assert_eq!(
            r.resolve_model("smart", &g).unwrap(),
            "databricks-claude-sonnet-4-5",
            "an alias to a group's model"
        );
        let e = r.resolve_model("databricks-gpt-5-1", &g).unwrap_err();
        assert_eq!((e.status, e.kind.as_str()), (401, "key_model_access_denied"));
        assert!(r.may_use_group("databricks-claude-sonnet-4-5", &g));
        assert!(!r.may_use_group("databricks-gpt-5-1", &g));
        assert_eq!(r.visible_models(&MODELS, &g), vec!["databricks-claude-sonnet-4-5", "smart"]);
        assert_eq!(
            r.scope(&MODELS, &g),
            Some(vec!["databricks-claude-sonnet-4-5".to_string(), "claude-only".to_string()]),
            "the ledger is told the group too"
        );
        let e = record_with(json!({"models": ["no-such-group"]})).validate(&MODELS, &g).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("models")));
    }

    #[test]
    fn model_max_budget_is_parsed_validated_and_shown_in_dollars() {
        let c = changes(json!({"model_max_budget": {
            "databricks-gpt-5-1": {"budget_limit": 0.05, "time_period": "1d"},
            "databricks-claude-sonnet-4-5": {"max_budget": "2", "budget_duration": null},
        }}))
        .unwrap();
        let (limits, periods) = c.model_max_budget.clone().unwrap();
        assert_eq!(limits["databricks-gpt-5-1"], 50_000_000_000);
        assert_eq!(periods["databricks-gpt-5-1"], "1d");
        assert_eq!(limits["databricks-claude-sonnet-4-5"], 2_000_000_000_000);
        assert!(!periods.contains_key("databricks-claude-sonnet-4-5"));
        let mut r = KeyRecord::new("sk-test-key-1234", "id-1".into(), NOW);
        r.apply(c, NOW);
        assert!(r.validate(&MODELS, &[]).is_ok());
        let v = r.to_api(Money::ZERO, None);
        assert_eq!(v["model_max_budget"]["databricks-gpt-5-1"], json!({"budget_limit": 0.05, "time_period": "1d"}));
        assert_eq!(
            v["model_max_budget"]["databricks-claude-sonnet-4-5"],
            json!({"budget_limit": 2.0, "time_period": null})
        );
        // Stored and read back; a record stored before the field existed reads as without budgets.
        let stored = serde_json::to_value(&r).unwrap();
        assert_eq!(KeyRecord::from_json(&stored).unwrap(), r);
        assert_eq!(json_text::to_string(&r), serde_json::to_string(&r).unwrap(), "written as serde writes it");
        let mut old = stored;
        old.as_object_mut().unwrap().remove("model_max_budget");
        old.as_object_mut().unwrap().remove("model_budget_period");
        assert!(KeyRecord::from_json(&old).unwrap().model_max_budget.is_empty());
        // null clears.
        r.apply(changes(json!({"model_max_budget": null})).unwrap(), NOW);
        assert!(r.model_max_budget.is_empty() && r.model_budget_period.is_empty());

        for body in [
            json!({"model_max_budget": {"databricks-gpt-5-1": {"budget_limit": -1}}}),
            json!({"model_max_budget": {"databricks-gpt-5-1": {"budget_limit": "lots"}}}),
            json!({"model_max_budget": {"databricks-gpt-5-1": {"time_period": "1d"}}}),
            json!({"model_max_budget": {"databricks-gpt-5-1": {"budget_limit": 1, "time_period": "daily"}}}),
            json!({"model_max_budget": {"databricks-gpt-5-1": {"budget_limit": 1, "tpm": 5}}}),
            json!({"model_max_budget": {"databricks-gpt-5-1": 5}}),
            json!({"model_max_budget": ["databricks-gpt-5-1"]}),
        ] {
            let e = changes(body.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("model_max_budget")), "{body}");
        }
        let e = record_with(json!({"model_max_budget": {"gpt-4": {"budget_limit": 1}}}))
            .validate(&MODELS, &[])
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model_max_budget"));
    }
}
