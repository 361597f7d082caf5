//! Reading a service's endpoints from its OpenAPI 3 description (JSON).

use serde_json::Value;
use xalo_core::{Error, ErrorCode};

use crate::access_right::Endpoint;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn bad(m: impl Into<String>) -> Error {
    Error::new(ErrorCode::ExchOpenApi, m)
}

/// Parse an OpenAPI 3 document given as JSON text.
pub fn parse(text: &str) -> Result<Value, Error> {
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    check(&doc)?;
    Ok(doc)
}

/// Check that a document is OpenAPI 3 with `paths`.
pub fn check(doc: &Value) -> Result<(), Error> {
    let version = doc
        .get("openapi")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"openapi\" version field"))?;
    if !version.starts_with("3.") {
        return Err(bad(format!(
            "OpenAPI {version}: only OpenAPI 3 is supported"
        )));
    }
    if !doc.get("paths").is_some_and(Value::is_object) {
        return Err(bad("no \"paths\" object"));
    }
    Ok(())
}

/// The endpoints (method and path template) a description declares.
pub fn endpoints(doc: &Value) -> Result<Vec<Endpoint>, Error> {
    check(doc)?;
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            if !path.starts_with('/') {
                return Err(bad(format!("path {path:?} does not start with /")));
            }
            if let Some(ops) = item.as_object() {
                for m in METHODS.iter().filter(|m| ops.contains_key(**m)) {
                    out.push(Endpoint::new(&m.to_ascii_uppercase(), path)?);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read() {
        let doc = parse(
            r#"{"openapi":"3.0.3","info":{"title":"t","version":"1"},
               "paths":{"/persons/{code}":{"get":{},"parameters":[]},"/persons":{"post":{},"get":{}}}}"#,
        )
        .unwrap();
        let mut e: Vec<String> = endpoints(&doc)
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        e.sort();
        assert_eq!(e, ["GET /persons", "GET /persons/{code}", "POST /persons"]);
        assert!(parse(r#"{"swagger":"2.0","paths":{}}"#).is_err());
        assert!(parse("not json").is_err());
    }
}
