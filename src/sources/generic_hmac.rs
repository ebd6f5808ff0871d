//! A configurable HMAC source for senders no built-in source knows: header name, algorithm,
//! encoding and prefix of the signature, and where the dedup key and event type live (a header
//! or a JSON pointer). Without a configured dedup key, the body's SHA-256 is the key, so a
//! byte-identical resend is a duplicate.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::registry::{self, Provider};
use super::{
    json, verify_body_hmac, IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized,
    SharedSource, Source, Verified,
};
use crate::clock::Timestamp;
use crate::config::{hmac_scheme, invalid, ConfigError};
use crate::journal::ClaimedDelivery;
use crate::verify::{HmacScheme, SecretSet, VerifyError};

/// Where a value is read from in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// A header, by lower-case name.
    Header(String),
    /// A JSON pointer into the body, e.g. `/id`.
    JsonPointer(String),
}

#[derive(Debug, Clone)]
pub struct GenericHmacSettings {
    pub secrets: SecretSet,
    /// Lower-case header name.
    pub signature_header: String,
    pub scheme: HmacScheme,
    pub dedup_key: Option<Locator>,
    pub event_type: Option<Locator>,
}

#[derive(Debug)]
pub struct GenericHmac {
    name: String,
    settings: GenericHmacSettings,
}

impl GenericHmac {
    pub fn new(name: impl Into<String>, settings: GenericHmacSettings) -> Self {
        Self {
            name: name.into(),
            settings,
        }
    }
}

fn locate(request: &IncomingRequest, payload: Option<&Value>, locator: &Locator) -> Option<String> {
    match locator {
        Locator::Header(name) => request.header(name).map(str::to_owned),
        Locator::JsonPointer(pointer) => payload.and_then(|payload| json::text(payload, pointer)),
    }
}

const KIND: &str = "hmac";

/// `[sources.NAME] kind = "hmac"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    signature_header: Option<String>,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    dedup_header: Option<String>,
    dedup_pointer: Option<String>,
    event_type_header: Option<String>,
    event_type_pointer: Option<String>,
}

/// Senders that sign the body with an HMAC in one header; exists only when configured.
pub struct GenericHmacProvider;

impl Provider for GenericHmacProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let context = format!("sources.{name}");
        let file: FileSettings = registry::settings(&context, section)?;
        let signature_header = file
            .signature_header
            .ok_or_else(|| {
                invalid(
                    format!("{context}.signature_header"),
                    "is required for kind = \"hmac\"",
                )
            })?
            .to_ascii_lowercase();
        let locator = |header: Option<String>, pointer: Option<String>| match (header, pointer) {
            (Some(header), _) => Some(Locator::Header(header.to_ascii_lowercase())),
            (None, Some(pointer)) => Some(Locator::JsonPointer(pointer)),
            (None, None) => None,
        };
        Ok(Arc::new(GenericHmac::new(
            name,
            GenericHmacSettings {
                secrets,
                signature_header,
                scheme: hmac_scheme(
                    &context,
                    file.algorithm.as_deref(),
                    file.encoding.as_deref(),
                    file.prefix.as_deref(),
                    None,
                )?,
                dedup_key: locator(file.dedup_header, file.dedup_pointer),
                event_type: locator(file.event_type_header, file.event_type_pointer),
            },
        )))
    }
}

impl Source for GenericHmac {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn secret_configured(&self) -> bool {
        !self.settings.secrets.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        verify_body_hmac(
            request,
            &self.settings.secrets,
            &self.settings.signature_header,
            &self.settings.scheme,
        )
    }

    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let needs_json = [&self.settings.dedup_key, &self.settings.event_type]
            .into_iter()
            .flatten()
            .any(|locator| matches!(locator, Locator::JsonPointer(_)));
        let payload = if needs_json {
            Some(request.json()?)
        } else {
            None
        };
        let request = request.request();
        let dedup_key = match &self.settings.dedup_key {
            Some(locator) => Some(
                locate(request, payload, locator)
                    .ok_or(IdentifyError::MissingField("dedup key"))?,
            ),
            None => None,
        };
        let event_type = self
            .settings
            .event_type
            .as_ref()
            .and_then(|locator| locate(request, payload, locator))
            .unwrap_or_else(|| "webhook".to_owned());
        Ok(Identity {
            event_id: dedup_key.clone(),
            event_type,
            dedup_key: dedup_key.unwrap_or_else(|| {
                format!("sha256:{}", hex::encode(Sha256::digest(&request.body)))
            }),
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
    use crate::verify::{Algorithm, Encoding};

    fn source(dedup_key: Option<Locator>) -> GenericHmac {
        GenericHmac::new(
            "shop",
            GenericHmacSettings {
                secrets: SecretSet::new(["k".to_owned()]),
                signature_header: "x-signature".into(),
                scheme: HmacScheme {
                    algorithm: Algorithm::Sha512,
                    encoding: Encoding::Base64,
                    prefix: None,
                },
                dedup_key,
                event_type: Some(Locator::JsonPointer("/kind".into())),
            },
        )
    }

    fn request(source: &GenericHmac, body: &str) -> IncomingRequest {
        let signature = source.settings.scheme.sign(b"k", body.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-signature",
            HeaderValue::from_str(&signature).expect("ascii"),
        );
        headers.insert("x-delivery", HeaderValue::from_static("d-1"));
        IncomingRequest {
            method: Method::POST,
            path: "/in/shop".into(),
            query: None,
            headers,
            body: Bytes::copy_from_slice(body.as_bytes()),
            received_at: Timestamp(0),
            path_params: Vec::new(),
        }
    }

    #[test]
    fn dedup_key_comes_from_the_configured_pointer() {
        let source = source(Some(Locator::JsonPointer("/id".into())));
        let verified = authenticate(
            &source,
            request(&source, r#"{"id":77,"kind":"x.y"}"#),
            Timestamp(0),
        )
        .expect("verified");
        let identity = source.identify(&verified).expect("identified");
        assert_eq!(
            (identity.dedup_key.as_str(), identity.event_type.as_str()),
            ("77", "x.y")
        );
    }

    #[test]
    fn dedup_key_comes_from_the_configured_header() {
        let source = source(Some(Locator::Header("x-delivery".into())));
        let verified =
            authenticate(&source, request(&source, "{}"), Timestamp(0)).expect("verified");
        assert_eq!(
            source.identify(&verified).expect("identified").dedup_key,
            "d-1"
        );
    }

    #[test]
    fn missing_dedup_key_is_a_clear_error() {
        let source = source(Some(Locator::JsonPointer("/id".into())));
        let verified = authenticate(&source, request(&source, r#"{"kind":"x"}"#), Timestamp(0))
            .expect("verified");
        assert!(matches!(
            source.identify(&verified),
            Err(IdentifyError::MissingField(_))
        ));
    }

    #[test]
    fn without_dedup_config_identical_bodies_share_a_key() {
        let source = source(None);
        let first = authenticate(&source, request(&source, "{\"kind\":\"a\"}"), Timestamp(0))
            .expect("verified");
        let second = authenticate(&source, request(&source, "{\"kind\":\"a\"}"), Timestamp(0))
            .expect("verified");
        assert_eq!(
            source.identify(&first).expect("identified").dedup_key,
            source.identify(&second).expect("identified").dedup_key
        );
    }
}
