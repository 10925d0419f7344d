//! The config `build.rs` validated and embedded, deserialised once per isolate.

use std::sync::OnceLock;

use crate::config::GatewayConfig;
use crate::fields::FromJson;

const CONFIG_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/gateway_config.json"));

/// The embedded config. Err only if build.rs and this crate disagree on its shape (a bug), or if
/// a test build is asked for a config it does not hold.
pub fn config() -> Result<&'static GatewayConfig, String> {
    static CONFIG: OnceLock<Result<GatewayConfig, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            crate::json::from_str(config_json()?)
                .map_err(|e| e.to_string())
                .and_then(|v| GatewayConfig::from_json(&v))
                .map_err(|e| format!("embedded config is unreadable: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(not(feature = "test-configs"))]
fn config_json() -> Result<&'static str, String> {
    Ok(CONFIG_JSON)
}

#[cfg(feature = "test-configs")]
use test_configs::config_json;
#[cfg(feature = "test-configs")]
pub use test_configs::select;

/// Test builds only (`make build-test`, feature `test-configs`): the configs of
/// `GATEWAY_TEST_CONFIGS` are embedded too, by file stem, and the worker var
/// `GATEWAY_TEST_CONFIG` of an instance picks one (unset: the build's own config). One release
/// build then serves every end-to-end test instead of one build per config. A shipped build
/// embeds exactly one config and reads no such var.
#[cfg(feature = "test-configs")]
mod test_configs {
    use std::sync::OnceLock;

    const TABLE: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/test_configs.rs"));

    static SELECTED: OnceLock<Option<String>> = OnceLock::new();

    /// Chooses this isolate's config by the name `name` reads; called on every request before
    /// the config is read, and the first call wins (an instance's vars do not change), so the
    /// var is read once per isolate.
    pub fn select(name: impl FnOnce() -> Option<String>) {
        if SELECTED.get().is_none() {
            let _ = SELECTED.set(name());
        }
    }

    pub(super) fn config_json() -> Result<&'static str, String> {
        match SELECTED.get().and_then(Option::as_deref) {
            None => Ok(super::CONFIG_JSON),
            Some(name) => TABLE
                .iter()
                .find(|(stem, _)| *stem == name)
                .map(|(_, json)| *json)
                .ok_or_else(|| format!("this test build embeds no config named `{name}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_config_loads() {
        assert!(!super::config().unwrap().deployments.is_empty());
    }
}
