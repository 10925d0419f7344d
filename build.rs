//! Validates the LiteLLM config at build time and embeds it as JSON.
//!
//! The config is `config/litellm_config.yaml`, or the file named by `GATEWAY_CONFIG`, read
//! through its typed shape (`litellm`) into the gateway's config (`normalise`). An invalid config
//! fails the build with the field's path; settings the gateway does not act on are printed as
//! cargo warnings. A test build (feature `test-configs`) also embeds the files named by
//! `GATEWAY_TEST_CONFIGS`, for the end-to-end tests to choose from at run time.

#[path = "src/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "src/config/litellm.rs"]
mod litellm;
#[path = "src/money.rs"]
#[allow(dead_code)]
mod money;
#[path = "src/config/normalise.rs"]
mod normalise;
#[path = "src/price_table.rs"]
#[allow(dead_code)]
mod price_table;

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=GATEWAY_CONFIG");
    println!("cargo:rerun-if-env-changed=GATEWAY_TEST_CONFIGS");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let path = match std::env::var("GATEWAY_CONFIG") {
        Ok(p) if !p.is_empty() => manifest_dir.join(p),
        _ => manifest_dir.join("config/litellm_config.yaml"),
    };
    let mut outputs = vec![("gateway_config.json", embed(&path))];
    // Test builds only (feature `test-configs`): the files GATEWAY_TEST_CONFIGS names are embedded
    // too, each under its file stem, for the runtime to choose from (see src/embedded.rs).
    if std::env::var_os("CARGO_FEATURE_TEST_CONFIGS").is_some() {
        let mut table = String::from("&[\n");
        for p in std::env::var("GATEWAY_TEST_CONFIGS").unwrap_or_default().split_whitespace() {
            let path = manifest_dir.join(p);
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            table.push_str(&format!("    ({name:?}, {:?}),\n", embed(&path)));
        }
        table.push_str("]\n");
        outputs.push(("test_configs.rs", table));
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    for (name, text) in outputs {
        let out = out_dir.join(name);
        if let Err(e) = std::fs::write(&out, text) {
            eprintln!("\nerror: cannot write {}: {e}\n", out.display());
            std::process::exit(1);
        }
    }
}

/// The config at `path` as the JSON the worker embeds; an invalid config ends the build.
fn embed(path: &PathBuf) -> String {
    println!("cargo:rerun-if-changed={}", path.display());
    build(path).unwrap_or_else(|message| {
        eprintln!("\nerror: invalid gateway config {}:\n  {message}\n", path.display());
        std::process::exit(1);
    })
}

fn build(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let doc: serde_json::Value = serde_yaml::from_str(&text).map_err(|e| format!("not valid YAML: {e}"))?;
    let parsed = normalise::parse(&doc).map_err(|e| e.to_string())?;
    for warning in &parsed.warnings {
        println!("cargo:warning=config {}: {warning}", path.display());
    }
    // A model without a price is charged 0, and keys with a budget are refused it.
    for d in &parsed.config.deployments {
        let priced = d.info.input_cost_per_token.is_some() || d.info.output_cost_per_token.is_some();
        if !priced && !price_table::has_builtin_price(&d.endpoint) {
            println!(
                "cargo:warning=config {}: model `{}` (endpoint `{}`) has no known price: its calls are charged 0 \
                 and keys with a budget are refused it; set model_info.input_cost_per_token and output_cost_per_token",
                path.display(),
                d.model_name,
                d.endpoint
            );
        }
    }
    serde_json::to_string(&parsed.config).map_err(|e| e.to_string())
}
