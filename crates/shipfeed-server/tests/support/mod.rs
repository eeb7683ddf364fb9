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
