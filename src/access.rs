//! Which model groups a list of `models` allows: a key's, and (the same rule) a team's or an
//! internal user's. The list may name model groups, model access groups
//! (`model_info.access_groups` in the config: every group in one) and `all-proxy-models`; an
//! empty list allows every model, as in LiteLLM.

use crate::config::AccessGroup;
pub use crate::config::ALL_MODELS;

/// Whether `models` allow the name `model` (a model group, or a key's alias): it is listed, or
/// an access group listed holds it, or the list allows everything.
pub fn allows(models: &[String], model: &str, access_groups: &[AccessGroup]) -> bool {
    allows_all(models) || models.iter().any(|m| m == model || holds(access_groups, m, model))
}

/// Whether `models` allow every model (empty, or `all-proxy-models`).
pub fn allows_all(models: &[String]) -> bool {
    models.is_empty() || models.iter().any(|m| m == ALL_MODELS)
}

/// Whether the access group `name` holds the model group `model`.
fn holds(access_groups: &[AccessGroup], name: &str, model: &str) -> bool {
    access_groups.iter().any(|g| g.name == name && g.models.iter().any(|m| m == model))
}

/// Whether `name` may be listed in `models`: a configured model group, an access group or
/// `all-proxy-models`.
pub fn is_known(name: &str, configured: &[&str], access_groups: &[AccessGroup]) -> bool {
    name == ALL_MODELS || configured.contains(&name) || access_groups.iter().any(|g| g.name == name)
}

/// The access groups `models` name, in the list's order.
pub fn named_groups<'a>(models: &'a [String], access_groups: &[AccessGroup]) -> Vec<&'a str> {
    models.iter().filter(|m| access_groups.iter().any(|g| &g.name == *m)).map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Vec<AccessGroup> {
        vec![
            AccessGroup { name: "cheap".into(), models: vec!["small".into(), "tiny".into()] },
            AccessGroup { name: "beta".into(), models: vec!["tiny".into(), "new".into()] },
        ]
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_access_group_allows_exactly_its_models() {
        let g = groups();
        let models = list(&["cheap"]);
        assert!(allows(&models, "small", &g));
        assert!(allows(&models, "tiny", &g));
        assert!(!allows(&models, "new", &g), "only beta holds it");
        assert!(!allows(&models, "big", &g));
        assert!(!allows(&models, "beta", &g), "an access group's name is no model");
        let both = list(&["cheap", "beta", "big"]);
        for model in ["small", "tiny", "new", "big"] {
            assert!(allows(&both, model, &g), "{model}");
        }
    }

    #[test]
    fn empty_lists_and_all_proxy_models_allow_everything_and_names_match_exactly() {
        let g = groups();
        assert!(allows(&[], "anything", &g));
        assert!(allows(&list(&["small", "all-proxy-models"]), "big", &g));
        assert!(allows_all(&list(&["all-proxy-models"])));
        assert!(!allows_all(&list(&["cheap"])));
        assert!(allows(&list(&["big"]), "big", &[]));
        assert!(!allows(&list(&["Big"]), "big", &[]), "names are case-sensitive, as model names");
        assert!(!allows(&list(&["cheap"]), "small", &[]), "without the config's groups, a name is only a name");
    }

    #[test]
    fn known_names_are_models_access_groups_and_all_proxy_models() {
        let g = groups();
        let configured = ["small", "tiny", "new", "big"];
        for name in ["small", "cheap", "beta", "all-proxy-models"] {
            assert!(is_known(name, &configured, &g), "{name}");
        }
        assert!(!is_known("gpt-4", &configured, &g));
        assert_eq!(named_groups(&list(&["big", "beta", "nope", "cheap"]), &g), ["beta", "cheap"]);
    }
}
