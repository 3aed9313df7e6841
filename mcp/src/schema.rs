//! JSON Schema shapes every MCP client takes: optional input fields as their plain type,
//! nullable output fields as `anyOf`, and no formats outside JSON Schema's own.
//!
//! schemars writes an `Option<T>` field as `"type": ["integer", "null"]` (or an `anyOf` with
//! `{"type": "null"}`) with `"default": null`. Some clients build their forms from `type`
//! alone: the MCP Inspector CLI 0.15 sent such a `budget_tokens` as the string "1500", and
//! Inspector 2.12 `--strict` warns on every such field. An optional field is already
//! optional by being left out of `required`, so the input schema says only its type. An
//! output field that can be `null` is written as `anyOf` branches of one type each, the
//! spelling `--strict` suggests. schemars also writes Rust's number types as formats
//! (`uint32`, `int64`, `double`) that JSON Schema does not define; validators warn on each.

use std::sync::Arc;

use rmcp::model::JsonObject;
use rmcp::schemars::Schema;
use serde_json::{Map, Value};

/// Formats schemars writes for Rust's number types; JSON Schema defines none of them.
const RUST_NUMBER_FORMATS: &[&str] = &[
    "int8", "int16", "int32", "int64", "int", "uint8", "uint16", "uint32", "uint64", "uint",
    "float", "double",
];

/// A `#[schemars(transform = ...)]` for input structs: each property's `null` alternative
/// and `"default": null` are dropped, and so are Rust's number formats.
pub fn plain_optionals(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        plain_optional_properties(object);
        walk(object, &mut drop_rust_formats);
    }
}

/// A `#[schemars(transform = ...)]` for the tool's arguments: the core request's `budget` is
/// offered as `budget_tokens` (a name that carries its unit, which agents already send), so
/// the schema names one of the two.
pub fn budget_as_budget_tokens(schema: &mut Schema) {
    if let Some(Value::Object(properties)) = schema
        .as_object_mut()
        .and_then(|object| object.get_mut("properties"))
    {
        properties.remove("budget");
    }
}

/// The output schema of `T` (rmcp's, for what `Serialize` writes), portable: nullable fields
/// as `anyOf`, no Rust number formats.
pub fn output_schema<T: rmcp::schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    let mut schema = (*rmcp::handler::server::tool::schema_for_output::<T>()).clone();
    walk(&mut schema, &mut |object| {
        drop_rust_formats(object);
        nullable_as_any_of(object);
    });
    Arc::new(schema)
}

/// Calls `visit` on `object` and every schema object below it.
fn walk(object: &mut Map<String, Value>, visit: &mut dyn FnMut(&mut Map<String, Value>)) {
    visit(object);
    for value in object.values_mut() {
        match value {
            Value::Object(child) => walk(child, visit),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(child) = item {
                        walk(child, visit);
                    }
                }
            }
            _ => {}
        }
    }
}

fn drop_rust_formats(object: &mut Map<String, Value>) {
    if let Some(Value::String(format)) = object.get("format")
        && RUST_NUMBER_FORMATS.contains(&format.as_str())
    {
        object.remove("format");
    }
}

/// `{"type": ["string", "null"], ...}` → `{"anyOf": [{"type": "string", ...}, {"type": "null"}]}`
/// (the description stays outside).
fn nullable_as_any_of(object: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = object.get("type") else {
        return;
    };
    if types.len() != 2 || !types.iter().any(|t| t == "null") {
        return;
    }
    let Some(other) = types.iter().find(|t| *t != "null").cloned() else {
        return;
    };
    let mut branch = Map::new();
    branch.insert("type".into(), other);
    let keys: Vec<String> = object
        .keys()
        .filter(|k| !matches!(k.as_str(), "type" | "description" | "title"))
        .cloned()
        .collect();
    for key in keys {
        if let Some(value) = object.remove(&key) {
            branch.insert(key, value);
        }
    }
    object.remove("type");
    object.insert(
        "anyOf".into(),
        Value::Array(vec![
            Value::Object(branch),
            serde_json::json!({"type": "null"}),
        ]),
    );
}

fn plain_optional_properties(schema: &mut Map<String, Value>) {
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

    #[derive(serde::Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Output {
        name: Option<String>,
        count: u32,
    }

    #[test]
    fn nullable_outputs_become_any_of_and_rust_formats_go() {
        let schema = Value::Object((*output_schema::<Output>()).clone());
        assert_eq!(
            schema["properties"]["name"],
            serde_json::json!({"anyOf": [{"type": "string"}, {"type": "null"}]})
        );
        assert_eq!(
            schema["properties"]["count"],
            serde_json::json!({"type": "integer", "minimum": 0})
        );
    }

    #[test]
    fn optional_fields_keep_their_type_and_lose_null() {
        let schema = serde_json::to_value(schemars::schema_for!(Params)).unwrap();
        let properties = &schema["properties"];
        assert_eq!(properties["count"]["type"], "integer", "{schema}");
        assert!(properties["count"].get("format").is_none(), "{schema}");
        assert!(properties["count"].get("default").is_none(), "{schema}");
        assert!(properties["mode"].get("anyOf").is_none(), "{schema}");
        assert_eq!(properties["mode"]["$ref"], "#/$defs/Mode", "{schema}");
        assert_eq!(schema["required"], serde_json::json!(["query"]));
    }
}
