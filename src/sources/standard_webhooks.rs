//! Standard Webhooks (standardwebhooks.com) senders defined in the config, at `POST /in/{name}`:
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`, `whsec_` secrets. The journal is the
//! product here: a verified delivery is stored, deduplicated by `webhook-id`, and marked
//! processed with no ledger change.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::registry::{self, Provider};
use super::{
    json, IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized, SharedSource,
    Source, Verified,
};
use crate::clock::Timestamp;
use crate::config::ConfigError;
use crate::journal::ClaimedDelivery;
use crate::verify::{SecretSet, StandardWebhooks as Scheme, VerifyError, DEFAULT_TOLERANCE_SECS};

#[derive(Debug)]
pub struct StandardWebhooks {
    name: String,
    secrets: SecretSet,
    scheme: Scheme,
}

impl StandardWebhooks {
    pub fn new(name: impl Into<String>, secrets: SecretSet, tolerance_secs: u64) -> Self {
        Self {
            name: name.into(),
            secrets,
            scheme: Scheme { tolerance_secs },
        }
    }
}

const KIND: &str = "standard-webhooks";

/// `[sources.NAME] kind = "standard-webhooks"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    tolerance_secs: Option<u64>,
}

/// Any sender that follows the Standard Webhooks spec; exists only when configured.
pub struct StandardWebhooksProvider;

impl Provider for StandardWebhooksProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let file: FileSettings = registry::settings(&format!("sources.{name}"), section)?;
        Ok(Arc::new(StandardWebhooks::new(
            name,
            secrets,
            file.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS),
        )))
    }
}

impl Source for StandardWebhooks {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn secret_configured(&self) -> bool {
        !self.secrets.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, now: Timestamp) -> Result<(), VerifyError> {
        if self.secrets.is_empty() {
            return Err(VerifyError::NoSecretConfigured);
        }
        self.scheme.verify(
            &self.secrets,
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            request.header("webhook-signature"),
            &request.body,
            now.unix_seconds(),
        )
    }

    /// The message id is the idempotency key the spec defines; the event type is the payload's
    /// `type` when it is JSON with one (the spec's recommended envelope).
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let request = request.request();
        let id = request
            .header("webhook-id")
            .ok_or(IdentifyError::MissingField("webhook-id header"))?;
        let event_type = serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|payload| json::text(&payload, "/type"))
            .unwrap_or_else(|| "message".to_owned());
        Ok(Identity {
            event_id: Some(id.to_owned()),
            event_type,
            dedup_key: id.to_owned(),
        })
    }

    fn normalize(&self, _delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        Ok(Normalized::Changes(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;
    use crate::sources::authenticate;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn request(id: &str, timestamp: i64, body: &str, signature: &str) -> IncomingRequest {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature.to_owned()),
        ] {
            headers.insert(name, HeaderValue::from_str(&value).expect("ascii"));
        }
        IncomingRequest {
            method: Method::POST,
            path: "/in/billing".into(),
            query: None,
            headers,
            body: Bytes::copy_from_slice(body.as_bytes()),
            received_at: Timestamp::from_unix_seconds(timestamp),
            path_params: Vec::new(),
        }
    }

    fn source() -> StandardWebhooks {
        StandardWebhooks::new("billing", SecretSet::new([SECRET.to_owned()]), 300)
    }

    #[test]
    fn published_vector_verifies_and_is_identified_by_message_id() {
        let request = request(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            "{\"test\": 2432232314}",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        let verified = authenticate(
            &source(),
            request,
            Timestamp::from_unix_seconds(1_614_265_330),
        )
        .expect("verified");
        let identity = source().identify(&verified).expect("identified");
        assert_eq!(identity.dedup_key, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(identity.event_type, "message");
    }

    #[test]
    fn stale_timestamp_is_rejected() {
        let body = r#"{"type":"invoice.paid"}"#;
        let signature = Scheme::sign(SECRET, "msg_1", 1_000, body.as_bytes()).expect("sign");
        let result = source().authenticate(
            &request("msg_1", 1_000, body, &signature),
            Timestamp::from_unix_seconds(1_000 + 301),
        );
        assert!(matches!(
            result,
            Err(VerifyError::TimestampOutsideTolerance { .. })
        ));
    }

    #[test]
    fn envelope_type_becomes_event_type() {
        let body = r#"{"type":"invoice.paid","data":{}}"#;
        let signature = Scheme::sign(SECRET, "msg_2", 1_000, body.as_bytes()).expect("sign");
        let verified = authenticate(
            &source(),
            request("msg_2", 1_000, body, &signature),
            Timestamp::from_unix_seconds(1_000),
        )
        .expect("verified");
        assert_eq!(
            source().identify(&verified).expect("identified").event_type,
            "invoice.paid"
        );
    }
}
