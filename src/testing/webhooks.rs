//! [`WebhookSigner`]: signs deliveries the way Wacht does (Standard Webhooks), so a test can
//! post webhooks to its own receiver. Written apart from the receiver's checks (which it tests).

use std::time::SystemTime;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue};

/// Signs webhook deliveries with a Wacht signing secret, as Wacht does: HMAC-SHA256 over
/// `{id}.{timestamp}.{body}` with the base64-decoded secret, sent as `webhook-signature:
/// v1,<base64>` beside `webhook-id` and `webhook-timestamp`.
///
/// ```
/// use tower_wacht::testing::WebhookSigner;
///
/// let signer = WebhookSigner::generate();
/// let body = WebhookSigner::event("user.deleted", serde_json::json!({"entity_id": "42"}));
/// let headers = signer.sign_now("msg_1", body.as_bytes());
/// assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1,"));
/// // Configure the receiver with `signer.secret()` (`whsec_...`).
/// assert!(signer.secret().starts_with("whsec_"));
/// ```
#[derive(Clone)]
pub struct WebhookSigner {
    secret: String,
    key: hmac::Key,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(..)")
    }
}

impl WebhookSigner {
    /// A signer with a fresh random secret of 24 bytes (as Standard Webhooks senders make
    /// them).
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; 24];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // The system RNG failed: a fixed test secret still signs (this is test tooling).
            bytes = *b"tower-wacht test secret!";
        }
        Self::from_bytes(&bytes)
    }

    /// A signer for `secret` (`whsec_<base64>`, or the base64 alone); `None` when it is not
    /// base64.
    #[must_use]
    pub fn new(secret: &str) -> Option<Self> {
        let encoded = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
        let bytes = STANDARD.decode(encoded).ok()?;
        Some(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        WebhookSigner {
            secret: format!("whsec_{}", STANDARD.encode(bytes)),
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The secret to configure the receiver with: `whsec_<base64>`.
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The `webhook-signature` entry for a delivery: `v1,<base64>`.
    #[must_use]
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let signed = [id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body].concat();
        format!("v1,{}", STANDARD.encode(hmac::sign(&self.key, &signed).as_ref()))
    }

    /// The three headers of a delivery sent at `timestamp` (Unix seconds). An `id` that
    /// cannot be a header value is left out (a receiver refuses the delivery).
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        };
        put("webhook-id", id.to_owned());
        put("webhook-timestamp", timestamp.to_string());
        put("webhook-signature", self.signature(id, timestamp, body));
        headers
    }

    /// [`sign`](Self::sign) for a delivery sent now.
    #[must_use]
    pub fn sign_now(&self, id: &str, body: &[u8]) -> HeaderMap {
        self.sign(id, now(), body)
    }

    /// A Wacht event body: `{"type": event, "timestamp": <now, RFC 3339>, "data": data}`.
    #[must_use]
    pub fn event(event: &str, data: serde_json::Value) -> String {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        serde_json::json!({ "type": event, "timestamp": timestamp, "data": data }).to_string()
    }
}

/// Unix seconds now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
