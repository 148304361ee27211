//! [`HttpGateway`]: `POST {base}/v1/authz/check` over one pooled reqwest client (rustls).

use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::wire::{CheckBody, PrincipalBody, decode_decision};
use super::{CheckRequest, Decision, Gateway, GatewayError};
use crate::config::{ApiKey, WachtAuthConfig};
use crate::error::ConfigError;
use crate::principal::CredentialKind;

/// Largest gateway response body read, in bytes. A decision is well under 4 KiB; anything much
/// bigger is a fault, answered as unavailable without buffering it.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The Wacht gateway client.
///
/// One `reqwest::Client` (connection pool, rustls) shared by every check; explicit connect and
/// total timeouts. The backend API key, if configured, is sent as `Authorization: Bearer`.
/// Redirects are never followed: a 3xx would re-send the user's token (and the API key) to
/// wherever it points, so it is a gateway fault (503), logged at error level.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    client: reqwest::Client,
    check_url: reqwest::Url,
}

impl HttpGateway {
    /// Builds the client from the layer configuration.
    pub fn new(config: &WachtAuthConfig) -> Result<Self, ConfigError> {
        let settings = &config.gateway;
        Self::with_settings(
            settings.gateway_url.clone(),
            settings.api_key.as_ref(),
            settings.connect_timeout,
            settings.request_timeout,
        )
    }

    /// Builds the client from explicit settings.
    pub fn with_settings(
        base_url: reqwest::Url,
        api_key: Option<&ApiKey>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| ConfigError::invalid("api_key", "not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("tower-wacht/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::invalid("gateway client", e.to_string()))?;
        let check_url = base_url
            .join("v1/authz/check")
            .map_err(|e| ConfigError::invalid("gateway_url", e.to_string()))?;
        Ok(HttpGateway { client, check_url })
    }

    async fn check_inner(&self, request: CheckRequest<'_>) -> Result<Decision, GatewayError> {
        let body = CheckBody {
            principal: PrincipalBody {
                kind: match request.kind {
                    CredentialKind::ApiKey => "api_key",
                    _ => "oauth_access_token",
                },
                value: request.token.expose(),
            },
            resource: request.resource,
            method: request.method,
            client_ip: request.client_ip,
            user_agent: request.user_agent,
        };
        let body = serde_json::to_vec(&body).map_err(|e| GatewayError::Decode(e.to_string()))?;
        let mut response = self
            .client
            .post(self.check_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(map_reqwest_error)?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            tracing::error!(
                status,
                "the gateway URL answered a redirect, which is never followed (it would carry the token elsewhere): check WACHT_GATEWAY_URL"
            );
            return Err(GatewayError::Status(status));
        }
        if !matches!(status, 200 | 401) {
            return Err(GatewayError::Status(status));
        }
        if !is_json(response.headers().get(CONTENT_TYPE)) {
            // An unknown API key is the one answer the gateway gives in plain text:
            // `401 Invalid API key` (`gateway-protocol.md` §4, step 3).
            if status == 401 && request.kind == CredentialKind::ApiKey && is_invalid_api_key(&mut response).await {
                return Ok(Decision::InvalidToken);
            }
            // The gateway answers every decision, and every 401 for an OAuth token, in JSON. A
            // plain-text 401 comes from something in front of it (or an API-key rejection of our
            // own credentials): the token was not judged, so it must not be called invalid.
            if status == 401 {
                tracing::error!(
                    "gateway path answered 401 without the gateway's JSON envelope: check WACHT_BACKEND_API_KEY and any proxy in front of the gateway"
                );
            }
            return Err(GatewayError::Decode(format!(
                "HTTP {status} answer is not application/json"
            )));
        }
        let mut buf = Vec::with_capacity(2048);
        while let Some(chunk) = response.chunk().await.map_err(map_reqwest_error)? {
            if buf.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(GatewayError::Decode(format!(
                    "response body larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        if status == 401 {
            return match decode_decision(&buf, request.kind) {
                // The error envelope: `allowed: false` with no reason. That is the gateway
                // itself saying the token is unknown, expired, revoked or inactive.
                Err(GatewayError::Decode(_)) if is_error_envelope(&buf) => Ok(Decision::InvalidToken),
                _ => Err(GatewayError::Status(401)),
            };
        }
        decode_decision(&buf, request.kind)
    }
}

/// True if a plain-text answer says exactly `Invalid API key` (read up to a few bytes).
async fn is_invalid_api_key(response: &mut reqwest::Response) -> bool {
    const TEXT: &[u8] = b"Invalid API key";
    let mut buf = Vec::with_capacity(TEXT.len());
    while let Ok(Some(chunk)) = response.chunk().await {
        if buf.len() + chunk.len() > TEXT.len() + 2 {
            return false;
        }
        buf.extend_from_slice(&chunk);
    }
    buf.trim_ascii() == TEXT
}

/// The gateway's error envelope (`gateway-protocol.md` §3.4): a JSON object with
/// `"allowed": false` and no identity.
fn is_error_envelope(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope {
        allowed: bool,
        #[serde(default)]
        identity: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Envelope>(body).is_ok_and(|e| !e.allowed && e.identity.is_none())
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn map_reqwest_error(e: reqwest::Error) -> GatewayError {
    if e.is_timeout() {
        GatewayError::Timeout
    } else if e.is_decode() || e.is_body() {
        // reqwest's Display for a request error includes the URL, never the request body.
        GatewayError::Decode(e.without_url().to_string())
    } else {
        GatewayError::Connect(e.without_url().to_string())
    }
}

impl Gateway for HttpGateway {
    fn check<'a>(&'a self, request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
        Box::pin(self.check_inner(request))
    }
}
