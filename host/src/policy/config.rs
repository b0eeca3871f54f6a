//! A policy's `[config]` table: flattened to dotted keys with scalar (or
//! list-of-text) values, which is all the WIT `config` interface can carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One config value as a policy reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    TextList(Vec<String>),
}

/// The whole `[config]` table of a policy file.
pub type PolicyConfig = BTreeMap<String, ConfigValue>;

/// Flattens a TOML table into a [`PolicyConfig`]. Nested tables become
/// dotted keys; the error names the key whose value cannot be carried.
pub(crate) fn flatten(table: &toml::Table) -> Result<PolicyConfig, String> {
    let mut out = PolicyConfig::new();
    flatten_into(&mut out, "", table)?;
    Ok(out)
}

fn flatten_into(out: &mut PolicyConfig, prefix: &str, table: &toml::Table) -> Result<(), String> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let converted = match value {
            toml::Value::String(s) => ConfigValue::Text(s.clone()),
            toml::Value::Integer(i) => ConfigValue::Integer(*i),
            toml::Value::Float(f) => ConfigValue::Float(*f),
            toml::Value::Boolean(b) => ConfigValue::Boolean(*b),
            toml::Value::Table(t) => {
                flatten_into(out, &name, t)?;
                continue;
            }
            toml::Value::Array(items) => {
                let texts: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                match texts {
                    Some(t) => ConfigValue::TextList(t),
                    None => {
                        return Err(format!(
                            "config.{name}: only lists of strings are supported"
                        ));
                    }
                }
            }
            toml::Value::Datetime(d) => ConfigValue::Text(d.to_string()),
        };
        out.insert(name, converted);
    }
    Ok(())
}

/// Reads an integer setting, or `default` when absent or of another type.
pub(crate) fn integer(config: &PolicyConfig, key: &str, default: i64) -> i64 {
    match config.get(key) {
        Some(ConfigValue::Integer(n)) => *n,
        _ => default,
    }
}
