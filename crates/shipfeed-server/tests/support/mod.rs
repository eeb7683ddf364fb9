//! What the server's HTTP tests share.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test code: panics are the failure reports

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Waits until delivery `seq` is projected (asking with the bearer `token`, if any); returns
/// what `GET /v1/deliveries/{seq}` says then.
pub async fn projected(base: &str, seq: i64, token: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::new();
    loop {
        let mut request = client.get(format!("{base}/v1/deliveries/{seq}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status["projected"] == json!(true) {
            return status;
        }
        assert!(Instant::now() < deadline, "delivery {seq}: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A validator for the schema of `path`'s `method` answer `status` in `document` (its
/// references resolved in the document).
pub fn response_validator(
    document: &Value,
    method: &str,
    path: &str,
    status: u16,
) -> jsonschema::Validator {
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    );
    assert!(
        document.pointer(&pointer).is_some(),
        "the document has no JSON schema for {method} {path} {status}"
    );
    let mut root = document.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    // A URI fragment: the braces of path templates percent-encoded.
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    root["$ref"] = json!(format!("#{fragment}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: not a valid schema: {e}"))
}

pub fn assert_matches(document: &Value, method: &str, path: &str, status: u16, body: &str) {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
    let validator = response_validator(document, method, path, status);
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match the document:\n{}\nvalue: {value}",
        errors.join("\n")
    );
}
