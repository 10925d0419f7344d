//! The config `build.rs` validated and embedded, deserialised once per isolate.

use std::sync::OnceLock;

use crate::config::GatewayConfig;

const CONFIG_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/gateway_config.json"));

/// The embedded config. Err only if build.rs and this crate disagree on its shape (a bug).
pub fn config() -> Result<&'static GatewayConfig, String> {
    static CONFIG: OnceLock<Result<GatewayConfig, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| crate::json::from_str(CONFIG_JSON).map_err(|e| format!("embedded config is unreadable: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_config_loads() {
        assert!(!super::config().unwrap().deployments.is_empty());
    }
}
