//! Stripe's `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>][,v0=<hex>]` scheme:
//! HMAC-SHA256 over `"{t}.{body}"`, keyed by the whole `whsec_...` string.

use super::hmac::hmac_digest;
use super::{
    any_match, check_tolerance, require_signature, Algorithm, SecretSet, VerifyError,
    DEFAULT_TOLERANCE_SECS,
};

/// The unix timestamp Stripe signed, returned on success so callers can log
/// it or use it for replay bookkeeping without parsing the header again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StripeTimestamp(pub i64);

/// Verifier for the `Stripe-Signature` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeScheme {
    /// Maximum distance, in either direction, between `t` and now.
    /// `0` disables the check, as in Stripe's own libraries; meant for tests only.
    pub tolerance_secs: u64,
}

impl Default for StripeScheme {
    fn default() -> Self {
        Self {
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }
}

impl StripeScheme {
    /// Accepts if any `v1` signature is the HMAC under any secret and `t` is
    /// within tolerance. `v0` (test-mode legacy) and unknown fields are ignored.
    ///
    /// The signature is checked before the tolerance, as Stripe's libraries do,
    /// so a tolerance error always concerns a genuinely signed timestamp.
    pub fn verify(
        &self,
        secrets: &SecretSet,
        header: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<StripeTimestamp, VerifyError> {
        if secrets.is_empty() {
            return Err(VerifyError::NoSecretConfigured);
        }
        let parsed = parse_header(require_signature(header)?)?;
        let expected: Vec<Vec<u8>> = secrets
            .iter_exposed()
            .map(|secret| signature_bytes(secret, parsed.timestamp, body))
            .collect();
        if !any_match(&expected, &parsed.v1) {
            return Err(VerifyError::Mismatch);
        }
        if self.tolerance_secs > 0 {
            check_tolerance(parsed.timestamp, now_unix, self.tolerance_secs)?;
        }
        Ok(StripeTimestamp(parsed.timestamp))
    }

    /// The `Stripe-Signature` value Stripe would send: `"t=<timestamp>,v1=<hex>"`.
    pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
        let sig = signature_bytes(secret.as_bytes(), timestamp, body);
        format!("t={timestamp},v1={}", hex::encode(sig))
    }
}

/// HMAC-SHA256 of `"{t}.{body}"`. The key is the secret string as configured,
/// `whsec_` prefix included: Stripe does not base64-decode it.
fn signature_bytes(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    let t = timestamp.to_string();
    hmac_digest(Algorithm::Sha256, secret, &[t.as_bytes(), b".", body])
}

/// What the header carries that matters for verification.
struct ParsedHeader {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

/// Length of an HMAC-SHA256 digest, the only valid `v1` length.
const V1_LEN: usize = 32;

/// Parses `k=v` pairs separated by commas. Strict where ambiguity could bite
/// (a repeated `t`, a `v1` that is not 64 hex digits), lenient elsewhere
/// (unknown keys, stray spaces).
fn parse_header(header: &str) -> Result<ParsedHeader, VerifyError> {
    let mut t: Option<&str> = None;
    let mut v1 = Vec::new();
    for (key, value) in header
        .split(',')
        .filter_map(|item| item.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
    {
        match key {
            "t" if t.is_some() => {
                return Err(malformed("Stripe-Signature has more than one t= field"));
            }
            "t" => t = Some(value),
            "v1" => v1.push(decode_v1(value)?),
            _ => {}
        }
    }
    if t.is_none() && v1.is_empty() {
        return Err(malformed("Stripe-Signature has neither t= nor v1= fields"));
    }
    let timestamp = parse_t(t)?;
    if v1.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    Ok(ParsedHeader { timestamp, v1 })
}

/// The `t=` value as unix seconds.
fn parse_t(t: Option<&str>) -> Result<i64, VerifyError> {
    let t = t
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingTimestamp)?;
    t.parse::<i64>()
        .map_err(|_| VerifyError::MalformedTimestamp)
}

/// One `v1=` value: case-insensitive hex of a 32-byte digest.
fn decode_v1(value: &str) -> Result<Vec<u8>, VerifyError> {
    let bytes = hex::decode(value).map_err(|_| malformed("v1 signature is not valid hex"))?;
    if bytes.len() != V1_LEN {
        return Err(malformed("v1 signature is not 32 bytes (64 hex digits)"));
    }
    Ok(bytes)
}

fn malformed(what: &str) -> VerifyError {
    VerifyError::MalformedSignature(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{flip_byte, i64_field, str_field, vectors};
    use super::*;

    /// The published vector plus the values tests derive from it.
    struct Vector {
        secret: String,
        header: String,
        payload: String,
        timestamp: i64,
        now: i64,
    }

    fn published() -> Vec<Vector> {
        vectors("stripe-v1")
            .iter()
            .map(|v| Vector {
                secret: str_field(v, "secret").to_owned(),
                header: str_field(v, "expected_header").to_owned(),
                payload: str_field(v, "payload").to_owned(),
                timestamp: i64_field(v, "timestamp"),
                now: i64_field(v, "verify_at"),
            })
            .collect()
    }

    fn verify(
        secret: &str,
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<StripeTimestamp, VerifyError> {
        StripeScheme::default().verify(
            &SecretSet::new([secret.to_owned()]),
            Some(header),
            body,
            now,
        )
    }

    /// The hex signature of the published header.
    fn v1_of(header: &str) -> &str {
        header
            .split(',')
            .find_map(|item| item.strip_prefix("v1="))
            .expect("vector header has a v1 field")
    }

    #[test]
    fn stripe_vector_verifies() {
        for v in published() {
            let result = verify(&v.secret, &v.header, v.payload.as_bytes(), v.now);
            assert_eq!(result, Ok(StripeTimestamp(v.timestamp)));
        }
    }

    #[test]
    fn stripe_vector_payload_keeps_its_newlines_and_spaces() {
        for v in published() {
            assert!(v.payload.contains("{\n  \"id\""), "{:?}", v.payload);
            assert!(!v.payload.ends_with('\n'));
        }
    }

    #[test]
    fn stripe_sign_reproduces_the_published_header() {
        for v in published() {
            let signed = StripeScheme::sign(&v.secret, v.timestamp, v.payload.as_bytes());
            assert_eq!(signed, v.header);
        }
    }

    #[test]
    fn stripe_changed_body_byte_is_a_mismatch() {
        for v in published() {
            let body = flip_byte(&v.payload, v.payload.len() / 2);
            assert_eq!(
                verify(&v.secret, &v.header, body.as_bytes(), v.now),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn stripe_changed_timestamp_byte_is_a_mismatch() {
        for v in published() {
            let t = v.timestamp.to_string();
            let changed_t = flip_byte(&t, t.len() - 1);
            let header = v
                .header
                .replacen(&format!("t={t}"), &format!("t={changed_t}"), 1);
            assert_ne!(header, v.header);
            assert_eq!(
                verify(&v.secret, &header, v.payload.as_bytes(), v.now),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn stripe_changed_secret_byte_is_a_mismatch() {
        for v in published() {
            let secret = flip_byte(&v.secret, v.secret.len() - 1);
            assert_eq!(
                verify(&secret, &v.header, v.payload.as_bytes(), v.now),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn stripe_secret_is_used_whole_not_base64_decoded() {
        for v in published() {
            let without_prefix = &v.secret["whsec_".len()..];
            assert_eq!(
                verify(without_prefix, &v.header, v.payload.as_bytes(), v.now),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn stripe_second_of_two_secrets_matches_during_rotation() {
        for v in published() {
            let set = SecretSet::new(["whsec_old".to_owned(), v.secret.clone()]);
            let result =
                StripeScheme::default().verify(&set, Some(&v.header), v.payload.as_bytes(), v.now);
            assert_eq!(result, Ok(StripeTimestamp(v.timestamp)));
        }
    }

    #[test]
    fn stripe_any_of_several_v1_signatures_may_match() {
        for v in published() {
            let header = format!(
                "t={},v1={},v1={},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
                v.timestamp,
                "0".repeat(64),
                v1_of(&v.header)
            );
            assert_eq!(
                verify(&v.secret, &header, v.payload.as_bytes(), v.now),
                Ok(StripeTimestamp(v.timestamp))
            );
        }
    }

    #[test]
    fn stripe_hex_comparison_is_case_insensitive() {
        for v in published() {
            let header = format!(
                "t={},v1={}",
                v.timestamp,
                v1_of(&v.header).to_ascii_uppercase()
            );
            assert_eq!(
                verify(&v.secret, &header, v.payload.as_bytes(), v.now),
                Ok(StripeTimestamp(v.timestamp))
            );
        }
    }

    #[test]
    fn stripe_v0_alone_is_not_accepted() {
        for v in published() {
            let header = v.header.replacen("v1=", "v0=", 1);
            assert_eq!(
                verify(&v.secret, &header, v.payload.as_bytes(), v.now),
                Err(VerifyError::MissingSignature)
            );
        }
    }

    fn check_at(now: i64, t: i64, tolerance_secs: u64) -> Result<StripeTimestamp, VerifyError> {
        let header = StripeScheme::sign("whsec_test_secret", t, b"{}");
        StripeScheme { tolerance_secs }.verify(
            &SecretSet::new(["whsec_test_secret".to_owned()]),
            Some(&header),
            b"{}",
            now,
        )
    }

    #[test]
    fn stripe_timestamp_at_tolerance_boundary_is_accepted() {
        assert_eq!(
            check_at(50_000, 50_000 - 300, 300),
            Ok(StripeTimestamp(49_700))
        );
        assert_eq!(
            check_at(50_000, 50_000 + 300, 300),
            Ok(StripeTimestamp(50_300))
        );
    }

    #[test]
    fn stripe_old_timestamp_is_rejected() {
        assert_eq!(
            check_at(50_000, 50_000 - 301, 300),
            Err(VerifyError::TimestampOutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn stripe_future_timestamp_is_rejected() {
        assert_eq!(
            check_at(50_000, 50_000 + 301, 300),
            Err(VerifyError::TimestampOutsideTolerance {
                age_secs: -301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn stripe_zero_tolerance_skips_the_timestamp_check() {
        assert_eq!(
            check_at(1_700_000_000, 12_345, 0),
            Ok(StripeTimestamp(12_345))
        );
    }

    #[test]
    fn stripe_empty_signature_header_is_missing() {
        let set = SecretSet::new(["whsec_test_secret".to_owned()]);
        for header in [None, Some(""), Some(" ")] {
            assert_eq!(
                StripeScheme::default().verify(&set, header, b"{}", 0),
                Err(VerifyError::MissingSignature),
                "{header:?}"
            );
        }
    }

    #[test]
    fn stripe_garbage_signature_is_malformed() {
        for header in [
            "garbage",
            "t=12345,v1=zz",
            "t=12345,v1=abcd",
            "t=12345,t=12346,v1=07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda",
        ] {
            let result = verify("whsec_test_secret", header, b"{}", 12_345);
            assert!(
                matches!(result, Err(VerifyError::MalformedSignature(_))),
                "{header}: {result:?}"
            );
        }
    }

    #[test]
    fn stripe_missing_or_bad_timestamp_is_reported() {
        let v1 = "07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda";
        assert_eq!(
            verify("whsec_test_secret", &format!("v1={v1}"), b"{}", 0),
            Err(VerifyError::MissingTimestamp)
        );
        assert_eq!(
            verify("whsec_test_secret", &format!("t=12x45,v1={v1}"), b"{}", 0),
            Err(VerifyError::MalformedTimestamp)
        );
    }

    #[test]
    fn stripe_no_secret_configured_refuses() {
        for v in published() {
            let result = StripeScheme::default().verify(
                &SecretSet::default(),
                Some(&v.header),
                v.payload.as_bytes(),
                v.now,
            );
            assert_eq!(result, Err(VerifyError::NoSecretConfigured));
        }
    }

    #[test]
    fn stripe_sign_output_verifies() {
        let body = b"{\"id\":\"evt_1\",\"type\":\"charge.succeeded\"}";
        let header = StripeScheme::sign("whsec_live_rotated", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify("whsec_live_rotated", &header, body, 1_700_000_100),
            Ok(StripeTimestamp(1_700_000_000))
        );
    }
}
