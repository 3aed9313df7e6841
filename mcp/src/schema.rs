//! JSON Schema shapes every MCP client takes: optional input fields as their plain type.
//!
//! schemars writes an `Option<T>` field as `"type": ["integer", "null"]` (or an `anyOf` with
//! `{"type": "null"}`) with `"default": null`. Some clients build their forms from `type`
//! alone: the MCP Inspector CLI 0.15 sent such a `budget_tokens` as the string "1500", and
//! Inspector 2.12 `--strict` warns on every such field. An optional field is already
//! optional by being left out of `required`, so the input schema says only its type.

use rmcp::schemars::Schema;
use serde_json::Value;

/// A `#[schemars(transform = ...)]` for input structs: each property's `null` alternative
/// and `"default": null` are dropped.
pub fn plain_optionals(schema: &mut Schema) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for property in properties.values_mut() {
        let Value::Object(map) = property else {
            continue;
        };
        if map.get("default") == Some(&Value::Null) {
            map.remove("default");
        }
        if let Some(Value::Array(types)) = map.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                map.insert("type".into(), only);
            }
        }
        if let Some(Value::Array(any_of)) = map.get("anyOf") {
            let rest: Vec<&Value> = any_of
                .iter()
                .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if rest.len() == 1
                && let Value::Object(only) = rest[0].clone()
            {
                map.remove("anyOf");
                for (key, value) in only {
                    map.entry(key).or_insert(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::schemars::{self, JsonSchema};

    #[derive(serde::Deserialize, JsonSchema)]
    #[schemars(transform = plain_optionals)]
    #[allow(dead_code)]
    struct Params {
        query: String,
        #[serde(default)]
        count: Option<i64>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Slow,
    }

    #[test]
    fn optional_fields_keep_their_type_and_lose_null() {
        let schema = serde_json::to_value(schemars::schema_for!(Params)).unwrap();
        let properties = &schema["properties"];
        assert_eq!(properties["count"]["type"], "integer", "{schema}");
        assert!(properties["count"].get("default").is_none(), "{schema}");
        assert!(properties["mode"].get("anyOf").is_none(), "{schema}");
        assert_eq!(properties["mode"]["$ref"], "#/$defs/Mode", "{schema}");
        assert_eq!(schema["required"], serde_json::json!(["query"]));
    }
}
