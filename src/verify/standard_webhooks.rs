//! Standard Webhooks (<https://www.standardwebhooks.com>), used by Svix and
//! others: HMAC-SHA256 over `"{id}.{timestamp}.{body}"` with a base64 key.

use secrecy::zeroize::Zeroizing;

use super::hmac::hmac_digest;
use super::{
    any_match, check_tolerance, decode_base64, encode_base64, parse_unix_timestamp,
    require_signature, Algorithm, SecretSet, VerifyError,
};

pub use super::DEFAULT_TOLERANCE_SECS;

/// Secrets are written `whsec_<base64>`; the key is the decoded base64.
const SECRET_PREFIX: &[u8] = b"whsec_";

/// The only signature version this spec defines for symmetric keys.
const VERSION_V1: &str = "v1";

/// Verifier for the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandardWebhooks {
    /// Maximum distance, in either direction, between the signed timestamp and now.
    pub tolerance_secs: u64,
}

impl Default for StandardWebhooks {
    fn default() -> Self {
        Self {
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }
}

impl StandardWebhooks {
    /// Accepts if any `v1,<base64>` entry of the space-separated `signature`
    /// header is the HMAC under any secret, and the timestamp is within tolerance.
    ///
    /// The timestamp is checked before the signature, as the reference
    /// libraries do, so stale replays are rejected without HMAC work.
    pub fn verify(
        &self,
        secrets: &SecretSet,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let keys = decode_keys(secrets)?;
        let id = require_id(id)?;
        let ts = parse_unix_timestamp(timestamp)?;
        check_tolerance(ts, now_unix, self.tolerance_secs)?;
        let provided = v1_signatures(require_signature(signature)?)?;
        let expected: Vec<Vec<u8>> = keys
            .iter()
            .map(|key| signature_bytes(key, id, &ts.to_string(), body))
            .collect();
        if any_match(&expected, &provided) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    /// The `webhook-signature` value (`"v1,<base64>"`) a sender would send.
    /// Fails with `BadKey` if `secret` is not (optionally `whsec_`-prefixed) base64.
    pub fn sign(
        secret: &str,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<String, VerifyError> {
        let key = decode_key(secret.as_bytes())?;
        let sig = signature_bytes(&key, id, &timestamp.to_string(), body);
        Ok(format!("{VERSION_V1},{}", encode_base64(&sig)))
    }
}

/// HMAC-SHA256 of `"{id}.{timestamp}.{body}"`.
///
/// The timestamp is the canonical decimal of the parsed value, which is what
/// senders sign; a header like `"+17"` or `" 17"` therefore still verifies.
fn signature_bytes(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    hmac_digest(
        Algorithm::Sha256,
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// Decodes every configured secret up front: one bad secret is a configuration
/// error that must surface loudly, not be skipped while its sibling verifies.
fn decode_keys(secrets: &SecretSet) -> Result<Vec<Zeroizing<Vec<u8>>>, VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    secrets.iter_exposed().map(decode_key).collect()
}

/// `whsec_<base64>` (or bare base64) to key bytes, zeroed when dropped.
fn decode_key(secret: &[u8]) -> Result<Zeroizing<Vec<u8>>, VerifyError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let encoded = std::str::from_utf8(encoded)
        .map_err(|_| VerifyError::BadKey("webhook secret is not valid base64".into()))?;
    let key = decode_base64(encoded)
        .map(Zeroizing::new)
        .map_err(|_| VerifyError::BadKey("webhook secret is not valid base64".into()))?;
    if key.is_empty() {
        return Err(VerifyError::BadKey(
            "webhook secret decodes to an empty key".into(),
        ));
    }
    Ok(key)
}

/// The id is part of the signed content, so without it nothing can be verified.
fn require_id(id: Option<&str>) -> Result<&str, VerifyError> {
    id.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        VerifyError::MalformedSignature("webhook-id header is missing or empty".into())
    })
}

/// Decoded signatures of the `v1,` entries; other versions (e.g. asymmetric
/// `v1a`) are ignored, as are undecodable entries so one bad entry cannot veto
/// a good one. No usable `v1` entry at all is `MalformedSignature`.
fn v1_signatures(header: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
    let signatures: Vec<Vec<u8>> = header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION_V1)
        .filter_map(|(_, sig)| decode_base64(sig).ok())
        .collect();
    if signatures.is_empty() {
        return Err(VerifyError::MalformedSignature(
            "webhook-signature has no decodable v1 entry".into(),
        ));
    }
    Ok(signatures)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{flip_byte, i64_field, str_field, vectors};
    use super::*;

    /// Fields of one published vector, owned so tests can mutate copies.
    #[derive(Clone)]
    struct Vector {
        secret: String,
        id: String,
        timestamp: String,
        signature: String,
        payload: String,
        now: i64,
    }

    fn published() -> Vec<Vector> {
        vectors("standard-webhooks-v1")
            .iter()
            .map(|v| Vector {
                secret: str_field(v, "secret").to_owned(),
                id: str_field(&v["headers"], "webhook-id").to_owned(),
                timestamp: str_field(&v["headers"], "webhook-timestamp").to_owned(),
                signature: str_field(&v["headers"], "webhook-signature").to_owned(),
                payload: str_field(v, "payload").to_owned(),
                now: i64_field(v, "verify_at"),
            })
            .collect()
    }

    fn verify(v: &Vector, secret: &str, body: &[u8]) -> Result<(), VerifyError> {
        StandardWebhooks::default().verify(
            &SecretSet::new([secret.to_owned()]),
            Some(&v.id),
            Some(&v.timestamp),
            Some(&v.signature),
            body,
            v.now,
        )
    }

    #[test]
    fn standard_webhooks_vector_verifies() {
        for v in published() {
            assert_eq!(
                verify(&v, &v.secret, v.payload.as_bytes()),
                Ok(()),
                "{}",
                v.id
            );
        }
    }

    #[test]
    fn standard_webhooks_sign_reproduces_the_published_header() {
        for v in vectors("standard-webhooks-v1") {
            let signed = StandardWebhooks::sign(
                str_field(&v, "secret"),
                str_field(&v, "id"),
                i64_field(&v, "timestamp"),
                str_field(&v, "payload").as_bytes(),
            );
            assert_eq!(signed.as_deref(), Ok(str_field(&v, "expected_header")));
        }
    }

    #[test]
    fn standard_webhooks_changed_body_byte_is_a_mismatch() {
        for v in published() {
            let body = flip_byte(&v.payload, v.payload.len() / 2);
            assert_eq!(
                verify(&v, &v.secret, body.as_bytes()),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn standard_webhooks_changed_timestamp_byte_is_a_mismatch() {
        for v in published() {
            // Last digit: still inside the tolerance, so only the HMAC can catch it.
            let changed = Vector {
                timestamp: flip_byte(&v.timestamp, v.timestamp.len() - 1),
                ..v
            };
            assert_eq!(
                verify(&changed, &changed.secret, changed.payload.as_bytes()),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn standard_webhooks_changed_id_byte_is_a_mismatch() {
        for v in published() {
            let changed = Vector {
                id: flip_byte(&v.id, v.id.len() - 1),
                ..v
            };
            assert_eq!(
                verify(&changed, &changed.secret, changed.payload.as_bytes()),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn standard_webhooks_changed_secret_byte_is_a_mismatch() {
        for v in published() {
            // Change a base64 character after "whsec_": still valid base64, different key.
            let secret = flip_byte(&v.secret, "whsec_".len() + 2);
            assert_eq!(
                verify(&v, &secret, v.payload.as_bytes()),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn standard_webhooks_secret_without_prefix_is_accepted() {
        for v in published() {
            let bare = &v.secret["whsec_".len()..];
            assert_eq!(verify(&v, bare, v.payload.as_bytes()), Ok(()));
        }
    }

    #[test]
    fn standard_webhooks_second_of_two_secrets_matches_during_rotation() {
        for v in published() {
            let set = SecretSet::new(["whsec_AAAAAAAAAAAAAAAA".to_owned(), v.secret.clone()]);
            let result = StandardWebhooks::default().verify(
                &set,
                Some(&v.id),
                Some(&v.timestamp),
                Some(&v.signature),
                v.payload.as_bytes(),
                v.now,
            );
            assert_eq!(result, Ok(()));
        }
    }

    #[test]
    fn standard_webhooks_any_v1_entry_of_several_may_match() {
        for v in published() {
            let header = format!(
                "v1a,bm90IGEgc2lnbmF0dXJl v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}",
                v.signature
            );
            let changed = Vector {
                signature: header,
                ..v
            };
            assert_eq!(
                verify(&changed, &changed.secret, changed.payload.as_bytes()),
                Ok(())
            );
        }
    }

    #[test]
    fn standard_webhooks_other_versions_are_ignored() {
        for v in published() {
            let header = v.signature.replacen("v1,", "v2,", 1);
            let changed = Vector {
                signature: header,
                ..v
            };
            assert!(matches!(
                verify(&changed, &changed.secret, changed.payload.as_bytes()),
                Err(VerifyError::MalformedSignature(_))
            ));
        }
    }

    fn check_at(now: i64, ts: i64) -> Result<(), VerifyError> {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = StandardWebhooks::sign(secret, "msg_1", ts, b"{}")?;
        StandardWebhooks::default().verify(
            &SecretSet::new([secret.to_owned()]),
            Some("msg_1"),
            Some(&ts.to_string()),
            Some(&sig),
            b"{}",
            now,
        )
    }

    #[test]
    fn standard_webhooks_timestamp_at_tolerance_boundary_is_accepted() {
        assert_eq!(check_at(10_000, 10_000 - 300), Ok(()));
        assert_eq!(check_at(10_000, 10_000 + 300), Ok(()));
    }

    #[test]
    fn standard_webhooks_old_timestamp_is_rejected() {
        assert_eq!(
            check_at(10_000, 10_000 - 301),
            Err(VerifyError::TimestampOutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn standard_webhooks_future_timestamp_is_rejected() {
        assert_eq!(
            check_at(10_000, 10_000 + 301),
            Err(VerifyError::TimestampOutsideTolerance {
                age_secs: -301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn standard_webhooks_missing_or_bad_timestamp_is_reported() {
        let v = &published()[0];
        let run = |ts: Option<&str>| {
            StandardWebhooks::default().verify(
                &SecretSet::new([v.secret.clone()]),
                Some(&v.id),
                ts,
                Some(&v.signature),
                v.payload.as_bytes(),
                v.now,
            )
        };
        assert_eq!(run(None), Err(VerifyError::MissingTimestamp));
        assert_eq!(run(Some("")), Err(VerifyError::MissingTimestamp));
        assert_eq!(
            run(Some("16142653x0")),
            Err(VerifyError::MalformedTimestamp)
        );
        assert_eq!(run(Some("1.5")), Err(VerifyError::MalformedTimestamp));
    }

    #[test]
    fn standard_webhooks_empty_signature_header_is_missing() {
        let v = &published()[0];
        for sig in [None, Some(""), Some("  ")] {
            let result = StandardWebhooks::default().verify(
                &SecretSet::new([v.secret.clone()]),
                Some(&v.id),
                Some(&v.timestamp),
                sig,
                v.payload.as_bytes(),
                v.now,
            );
            assert_eq!(result, Err(VerifyError::MissingSignature), "{sig:?}");
        }
    }

    #[test]
    fn standard_webhooks_garbage_signature_is_malformed() {
        let v = &published()[0];
        for sig in ["garbage", "v1,***not base64***", "v1"] {
            let changed = Vector {
                signature: sig.to_owned(),
                ..v.clone()
            };
            let result = verify(&changed, &changed.secret, changed.payload.as_bytes());
            assert!(
                matches!(result, Err(VerifyError::MalformedSignature(_))),
                "{sig}: {result:?}"
            );
        }
    }

    #[test]
    fn standard_webhooks_missing_id_is_malformed() {
        let v = &published()[0];
        let result = StandardWebhooks::default().verify(
            &SecretSet::new([v.secret.clone()]),
            None,
            Some(&v.timestamp),
            Some(&v.signature),
            v.payload.as_bytes(),
            v.now,
        );
        assert!(matches!(result, Err(VerifyError::MalformedSignature(_))));
    }

    #[test]
    fn standard_webhooks_secret_that_is_not_base64_is_a_bad_key() {
        let v = &published()[0];
        assert!(matches!(
            verify(v, "whsec_!!!notbase64!!!", v.payload.as_bytes()),
            Err(VerifyError::BadKey(_))
        ));
        assert!(matches!(
            verify(v, "whsec_", v.payload.as_bytes()),
            Err(VerifyError::BadKey(_))
        ));
        assert!(matches!(
            StandardWebhooks::sign("whsec_%%%", "msg", 1, b""),
            Err(VerifyError::BadKey(_))
        ));
    }

    #[test]
    fn standard_webhooks_bad_key_message_does_not_echo_the_secret() {
        let v = &published()[0];
        let Err(err) = verify(v, "whsec_s3cr3t!", v.payload.as_bytes()) else {
            panic!("an invalid key must not verify");
        };
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn standard_webhooks_no_secret_configured_refuses() {
        let v = &published()[0];
        let result = StandardWebhooks::default().verify(
            &SecretSet::default(),
            Some(&v.id),
            Some(&v.timestamp),
            Some(&v.signature),
            v.payload.as_bytes(),
            v.now,
        );
        assert_eq!(result, Err(VerifyError::NoSecretConfigured));
    }

    #[test]
    fn standard_webhooks_sign_output_verifies() {
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let body = b"{\"type\":\"invoice.paid\"}\n";
        let sig = StandardWebhooks::sign(secret, "msg_abc", 1_700_000_000, body);
        let sig = sig.expect("valid whsec_ secret signs");
        assert!(sig.starts_with("v1,"));
        let result = StandardWebhooks { tolerance_secs: 60 }.verify(
            &SecretSet::new([secret.to_owned()]),
            Some("msg_abc"),
            Some("1700000000"),
            Some(&sig),
            body,
            1_700_000_030,
        );
        assert_eq!(result, Ok(()));
    }
}
