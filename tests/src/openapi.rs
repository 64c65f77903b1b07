//! The read API's OpenAPI document (`docs/openapi.json`) as a test oracle: which route a
//! request path belongs to, and whether a response body is what the document says for that
//! route and status.
//!
//! The schemas are checked with the part of JSON Schema the document uses — `$ref` within the
//! document, `type` (one or a list, `null` included), `enum`, `properties`, `required`,
//! `additionalProperties: false`, `items`, `maxItems`, `minimum`, `maximum` and the formats
//! `uuid` and `date-time` — so that an undocumented field, a missing one or a wrong type fails.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use serde_json::Value;

/// The document, with the lookups a test needs.
#[derive(Debug, Clone)]
pub struct OpenApi {
    doc: Value,
}

impl OpenApi {
    /// Reads `docs/openapi.json` of the repository.
    pub fn load() -> anyhow::Result<Self> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            doc: serde_json::from_str(&text).context("docs/openapi.json is not JSON")?,
        })
    }

    /// Every documented path template (`/api/v1/tags/{tag}/users`).
    pub fn paths(&self) -> Vec<String> {
        self.doc["paths"]
            .as_object()
            .map(|paths| paths.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The template a request path (without its query) matches, if any.
    pub fn template_of(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        self.paths().into_iter().find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| {
                    (part.starts_with('{') && !segment.is_empty()) || part == segment
                })
        })
    }

    /// Checks `body` against the schema the document gives for `GET template` answering
    /// `status`; the error lists every mismatch with where in the body it is.
    pub fn check(&self, template: &str, status: u16, body: &Value) -> anyhow::Result<()> {
        let response = &self.doc["paths"][template]["get"]["responses"][status.to_string()];
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_null() {
            return Err(anyhow!("GET {template} has no documented {status} answer"));
        }
        let mut errors = Vec::new();
        self.validate(schema, body, "$", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "GET {template} {status} does not match its schema: {}",
                errors.join("; ")
            ))
        }
    }

    /// Checks `body` against a named schema of the document (`Error`).
    pub fn check_schema(&self, name: &str, body: &Value) -> anyhow::Result<()> {
        let schema = &self.doc["components"]["schemas"][name];
        let mut errors = Vec::new();
        self.validate(schema, body, "$", &mut errors);
        anyhow::ensure!(errors.is_empty(), "not a {name}: {}", errors.join("; "));
        Ok(())
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.trim_start_matches('#');
                self.doc.pointer(pointer).unwrap_or(&Value::Null)
            }
            None => schema,
        }
    }

    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(types) = types(schema) {
            if !types.iter().any(|t| has_type(value, t)) {
                errors.push(format!("{at}: {value} is not {}", types.join(" or ")));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                errors.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        if let Some(number) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|min| number < min) {
                errors.push(format!("{at}: {number} is below {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|max| number > max) {
                errors.push(format!("{at}: {number} is above {}", schema["maximum"]));
            }
        }
        if let Some(text) = value.as_str() {
            match schema["format"].as_str() {
                Some("uuid") if uuid::Uuid::try_parse(text).is_err() => {
                    errors.push(format!("{at}: `{text}` is not a uuid"));
                }
                Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
                    errors.push(format!("{at}: `{text}` is not an RFC 3339 date-time"));
                }
                _ => {}
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    errors.push(format!("{at}: `{name}` is missing"));
                }
            }
            for (name, field) in object {
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => {
                        self.validate(property, field, &format!("{at}.{name}"), errors)
                    }
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        errors.push(format!("{at}: `{name}` is not documented"));
                    }
                    None => {}
                }
            }
        }
        if let Some(items) = value.as_array() {
            if schema["maxItems"]
                .as_u64()
                .is_some_and(|max| items.len() as u64 > max)
            {
                errors.push(format!("{at}: more than {} items", schema["maxItems"]));
            }
            for (i, item) in items.iter().enumerate() {
                self.validate(&schema["items"], item, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

fn types(schema: &Value) -> Option<Vec<&str>> {
    match &schema["type"] {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => Some(many.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn api() -> OpenApi {
        OpenApi::load().expect("docs/openapi.json")
    }

    #[test]
    fn a_request_path_finds_its_template() {
        let api = api();
        assert_eq!(
            api.template_of("/api/v1/tags/Pizza%20Lover/users?limit=3")
                .as_deref(),
            Some("/api/v1/tags/{tag}/users")
        );
        assert_eq!(api.template_of("/api/v1/nothing"), None);
    }

    #[test]
    fn a_body_with_an_undocumented_or_missing_field_fails() {
        let api = api();
        let good = json!({"error": "unknown_tag", "message": "no"});
        api.check("/api/v1/tags/{tag}/users", 404, &good)
            .expect("valid");
        let extra = json!({"error": "unknown_tag", "message": "no", "hint": 1});
        assert!(api.check("/api/v1/tags/{tag}/users", 404, &extra).is_err());
        let missing = json!({"error": "unknown_tag"});
        assert!(api
            .check("/api/v1/tags/{tag}/users", 404, &missing)
            .is_err());
    }

    #[test]
    fn a_wrong_type_or_format_fails() {
        let api = api();
        let body = json!({"user_id": "not-a-uuid", "tags": []});
        assert!(api.check("/api/v1/users/{user}/tags", 200, &body).is_err());
        let body = json!({"user_id": uuid::Uuid::nil(), "tags": [{"tag": "t", "order_cnt": "1",
            "granted_at": "2026-11-22T10:00:00Z"}]});
        assert!(api.check("/api/v1/users/{user}/tags", 200, &body).is_err());
    }
}
