//! Remote session apps over HTTP, in VTEX's wire format.
//!
//! The manager sends `POST <url>` with `{"<ns>": {"<key>": {"value": v}}}` holding the app's
//! declared inputs that are set (never anything else), `content-type: application/json`,
//! `x-vtex-account`, and `x-sessiond-signature: sha256=<hex HMAC-SHA256 of the body>` when the app
//! has a shared secret. The app answers 200 with the same shape holding some of its outputs.
//! Anything else is a failure of that app alone, except 401/403 with `{"type","message"}`,
//! which rejects the whole request.

use hmac::{Hmac, Mac};
use sessiond_core::cycle::BoxFuture;
use sessiond_core::{AppError, Call, Changes, Key, Namespaces, Transformer, Value};
use sha2::Sha256;

/// Largest answer read from an app, in bytes; a longer answer is a failure.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Header carrying the account name.
pub const ACCOUNT_HEADER: &str = "x-vtex-account";
/// Header carrying the body's HMAC.
pub const SIGNATURE_HEADER: &str = "x-sessiond-signature";

/// An app reached over HTTP.
pub struct HttpApp {
    client: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
}

impl HttpApp {
    /// An app at `url`, called through the shared, pooled `client`.
    pub fn new(client: reqwest::Client, url: impl Into<String>, secret: Option<&str>) -> Self {
        HttpApp {
            client,
            url: url.into(),
            secret: secret.map(|s| s.as_bytes().to_vec()),
        }
    }

    async fn call(&self, account: &str, input: &Namespaces) -> Result<Changes, AppError> {
        let body = wire_body(input);
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ACCOUNT_HEADER, account);
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|e| AppError::Failed(format!("cannot reach {}: {e}", self.url)))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| AppError::Failed(format!("reading the answer failed: {e}")))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(AppError::Failed(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        match status {
            200..=299 => parse_answer(&answer),
            401 | 403 => Err(rejection(status, &answer)),
            other => Err(AppError::Failed(format!("answered HTTP {other}"))),
        }
    }
}

impl Transformer for HttpApp {
    fn transform<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Changes, AppError>> {
        Box::pin(async move { self.call(call.account, &call.input).await })
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request body: every input as `{"value": v}` (no `keepAlive`: that is the manager's).
fn wire_body(input: &Namespaces) -> Vec<u8> {
    let body: serde_json::Map<String, serde_json::Value> = input
        .iter()
        .map(|(ns, keys)| {
            let keys: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!({ "value": v.value })))
                .collect();
            (ns.clone(), serde_json::Value::Object(keys))
        })
        .collect();
    serde_json::to_vec(&body).expect("JSON values serialize")
}

/// A 401/403 rejects the request only when it says why (`{"type","message"}`).
fn rejection(status: u16, answer: &[u8]) -> AppError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(answer).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("type"), field("message")) {
        (Some(kind), Some(message)) => AppError::Rejected {
            status,
            kind,
            message,
        },
        _ => AppError::Failed(format!(
            "answered HTTP {status} without a {{\"type\",\"message\"}} body"
        )),
    }
}

/// Reads `{"<ns>": {"<key>": {"value": v}}}`; `null` values delete. Anything else fails the
/// whole answer (a partial answer is never applied).
pub fn parse_answer(answer: &[u8]) -> Result<Changes, AppError> {
    let malformed = |why: String| AppError::Failed(format!("malformed answer: {why}"));
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Ok(Changes::new());
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(answer).map_err(|e| malformed(e.to_string()))?;
    let serde_json::Value::Object(namespaces) = parsed else {
        return Err(malformed("not a JSON object".into()));
    };
    let mut changes = Changes::new();
    for (ns, keys) in namespaces {
        let serde_json::Value::Object(keys) = keys else {
            return Err(malformed(format!("`{ns}` is not an object")));
        };
        for (key, entry) in keys {
            let value = entry
                .as_object()
                .and_then(|e| e.get("value"))
                .ok_or_else(|| malformed(format!("`{ns}.{key}` has no `value`")))?;
            let key = Key::new(ns.as_str(), key);
            if value.is_null() {
                changes.remove(key);
            } else {
                changes.set(key, Value::new(value.clone()));
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_fail_whole() {
        let c =
            parse_answer(br#"{"search": {"facets": {"value": "a=b;"}, "old": {"value": null}}}"#)
                .unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_answer(b"").unwrap().is_empty());
        for bad in [
            &b"[]"[..],
            b"{",
            br#"{"a": 1}"#,
            br#"{"a": {"k": "v"}}"#,
            br#"{"a": {"k": {}}}"#,
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejections_need_a_reason() {
        assert_eq!(
            rejection(403, br#"{"type":"Forbidden","message":"no"}"#),
            AppError::Rejected {
                status: 403,
                kind: "Forbidden".into(),
                message: "no".into()
            }
        );
        assert!(matches!(rejection(401, b"nope"), AppError::Failed(_)));
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_carries_values_only() {
        let mut input = Namespaces::new();
        std::sync::Arc::make_mut(input.entry("public".into()).or_default())
            .insert("a".into(), Value::kept("1"));
        assert_eq!(wire_body(&input), br#"{"public":{"a":{"value":"1"}}}"#);
    }
}
