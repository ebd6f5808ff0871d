//! Offline verification of PayPal's `SHA256withRSA` webhook signatures, so a
//! gateway need not call PayPal's verify-webhook-signature API per event.
//!
//! Fetching the certificate from `paypal-cert-url` and checking that URL's host are the
//! caller's job, and so is choosing the moment at which the certificate must be valid
//! ([`PaypalCertificate::check_valid_at`]).

use chrono::SecondsFormat;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use std::fmt;
use x509_cert::der::{Decode, Encode};
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::{decode_base64, require_signature, VerifyError};
use crate::clock::Timestamp;

/// The only `paypal-auth-algo` PayPal uses for webhooks.
const SUPPORTED_AUTH_ALGO: &str = "SHA256withRSA";

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// The RSA public key of a PayPal signing certificate and its validity period, parsed once
/// and reused.
///
/// Verifying a signature does not look at the dates: PayPal's published vector was signed
/// with a certificate that expired in 2017, and only the caller knows the moment that counts
/// (when the delivery arrived, not when it is verified), so it asks
/// [`PaypalCertificate::check_valid_at`].
#[derive(Clone)]
pub struct PaypalCertificate {
    key: VerifyingKey<Sha256>,
    fingerprint: [u8; 32],
    not_before: Timestamp,
    not_after: Timestamp,
}

impl PaypalCertificate {
    /// Parses the PEM served at `paypal-cert-url`. If it holds a chain, the
    /// first certificate (the leaf that signs) is used and the rest ignored.
    pub fn from_pem(pem: &str) -> Result<Self, VerifyError> {
        let der = first_certificate_der(pem)?;
        let cert = Certificate::from_der(&der)
            .map_err(|e| bad_key(format!("certificate is not valid X.509: {e}")))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad_key(format!("certificate public key cannot be re-encoded: {e}")))?;
        let public_key = RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| bad_key(format!("certificate public key is not RSA: {e}")))?;
        let validity = &cert.tbs_certificate.validity;
        Ok(Self {
            key: VerifyingKey::new(public_key),
            fingerprint: Sha256::digest(&der).into(),
            not_before: unix_time(&validity.not_before)?,
            not_after: unix_time(&validity.not_after)?,
        })
    }

    /// Whether the certificate was valid at `at`: RFC 5280's validity period includes both
    /// `notBefore` and `notAfter`.
    pub fn check_valid_at(&self, at: Timestamp) -> Result<(), VerifyError> {
        let (not_before, not_after) = (self.not_before, self.not_after);
        if (not_before.unix_seconds()..=not_after.unix_seconds()).contains(&at.unix_seconds()) {
            return Ok(());
        }
        let seconds = |t: Timestamp| t.to_datetime().to_rfc3339_opts(SecondsFormat::Secs, true);
        Err(VerifyError::CertificateNotValid {
            at: seconds(at),
            not_before: seconds(not_before),
            not_after: seconds(not_after),
        })
    }

    /// SHA-256 of the certificate's DER, the value to pin (what
    /// `openssl x509 -fingerprint -sha256` prints, without the colons).
    pub fn sha256_fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

impl fmt::Debug for PaypalCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaypalCertificate")
            .field("sha256_fingerprint", &hex::encode(self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// The DER bytes of the first `CERTIFICATE` block, ignoring any text around it
/// (openssl's `subject=` lines) and any chain certificates after it.
fn first_certificate_der(pem: &str) -> Result<Vec<u8>, VerifyError> {
    let start = pem
        .find(PEM_BEGIN)
        .ok_or_else(|| bad_key("no PEM CERTIFICATE block found".into()))?;
    let rest = &pem[start..];
    let end = rest
        .find(PEM_END)
        .ok_or_else(|| bad_key("PEM CERTIFICATE block is not terminated".into()))?;
    let block = &rest[..end + PEM_END.len()];
    let (_label, der) = x509_cert::der::pem::decode_vec(block.as_bytes())
        .map_err(|e| bad_key(format!("certificate PEM cannot be decoded: {e}")))?;
    Ok(der)
}

/// An X.509 time as a [`Timestamp`] (whole seconds, as X.509 keeps them).
fn unix_time(time: &Time) -> Result<Timestamp, VerifyError> {
    let seconds = i64::try_from(time.to_unix_duration().as_secs())
        .map_err(|_| bad_key(format!("certificate validity date {time} is out of range")))?;
    Ok(Timestamp::from_unix_seconds(seconds))
}

fn bad_key(what: String) -> VerifyError {
    VerifyError::BadKey(what)
}

/// The `paypal-*` request headers and the configured webhook id, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaypalTransmission<'a> {
    /// `paypal-transmission-id`
    pub transmission_id: &'a str,
    /// `paypal-transmission-time` (RFC 3339, signed verbatim; replay windows are the caller's)
    pub transmission_time: &'a str,
    /// The id PayPal assigned to this webhook subscription (configuration, not a header).
    pub webhook_id: &'a str,
    /// `paypal-auth-algo`
    pub auth_algo: &'a str,
    /// `paypal-transmission-sig`
    pub signature_b64: &'a str,
}

/// `"{transmission_id}|{transmission_time}|{webhook_id}|{crc32(body)}"`, the
/// exact text PayPal signs; the CRC-32 (IEEE) is printed as unsigned decimal.
pub fn paypal_signed_message(
    transmission_id: &str,
    transmission_time: &str,
    webhook_id: &str,
    body: &[u8],
) -> String {
    let crc = crc32fast::hash(body);
    format!("{transmission_id}|{transmission_time}|{webhook_id}|{crc}")
}

/// Verifies an RSA PKCS#1 v1.5 / SHA-256 signature over
/// [`paypal_signed_message`] with the certificate's public key.
///
/// The webhook id acts as the per-source "secret": binding it into the message
/// stops events for another merchant's webhook being replayed at this one.
pub fn verify_paypal(
    cert: &PaypalCertificate,
    t: &PaypalTransmission<'_>,
    body: &[u8],
) -> Result<(), VerifyError> {
    if t.webhook_id.trim().is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    let signature_b64 = require_signature(Some(t.signature_b64))?;
    check_request_fields(t)?;
    let signature = decode_signature(signature_b64)?;
    let message = paypal_signed_message(t.transmission_id, t.transmission_time, t.webhook_id, body);
    cert.key
        .verify(message.as_bytes(), &signature)
        .map_err(|_| VerifyError::Mismatch)
}

/// The header fields other than the signature must be present and supported.
fn check_request_fields(t: &PaypalTransmission<'_>) -> Result<(), VerifyError> {
    if !t.auth_algo.trim().eq_ignore_ascii_case(SUPPORTED_AUTH_ALGO) {
        return Err(VerifyError::MalformedSignature(
            "paypal-auth-algo is not SHA256withRSA".into(),
        ));
    }
    if t.transmission_time.trim().is_empty() {
        return Err(VerifyError::MissingTimestamp);
    }
    if t.transmission_id.trim().is_empty() {
        return Err(VerifyError::MalformedSignature(
            "paypal-transmission-id is missing".into(),
        ));
    }
    Ok(())
}

/// Base64 to an RSA signature value.
fn decode_signature(signature_b64: &str) -> Result<Signature, VerifyError> {
    let bytes = decode_base64(signature_b64).map_err(|_| {
        VerifyError::MalformedSignature("paypal-transmission-sig is not valid base64".into())
    })?;
    Signature::try_from(bytes.as_slice()).map_err(|_| {
        VerifyError::MalformedSignature("paypal-transmission-sig is not an RSA signature".into())
    })
}

/// The test run's own PayPal-like key pair and certificates, shared with `tests/it`.
#[cfg(test)]
#[path = "../../tests/it/paypal/pki.rs"]
mod pki;

#[cfg(test)]
mod tests {
    use super::super::fixtures::{flip_byte, str_field, vectors, PAYPAL_CERT_PEM};
    use super::pki;
    use super::*;

    /// The published PayPal vector, owned so tests can change one field.
    #[derive(Clone)]
    struct Vector {
        transmission_id: String,
        transmission_time: String,
        webhook_id: String,
        auth_algo: String,
        signature: String,
        payload: String,
    }

    impl Vector {
        fn transmission(&self) -> PaypalTransmission<'_> {
            PaypalTransmission {
                transmission_id: &self.transmission_id,
                transmission_time: &self.transmission_time,
                webhook_id: &self.webhook_id,
                auth_algo: &self.auth_algo,
                signature_b64: &self.signature,
            }
        }

        fn verify(&self) -> Result<(), VerifyError> {
            verify_paypal(&cert(), &self.transmission(), self.payload.as_bytes())
        }
    }

    fn published() -> Vec<Vector> {
        vectors("paypal-sha256withrsa")
            .iter()
            .map(|v| {
                let headers = &v["headers"];
                Vector {
                    transmission_id: str_field(headers, "paypal-transmission-id").to_owned(),
                    transmission_time: str_field(headers, "paypal-transmission-time").to_owned(),
                    webhook_id: str_field(v, "webhook_id").to_owned(),
                    auth_algo: str_field(headers, "paypal-auth-algo").to_owned(),
                    signature: str_field(v, "expected_header").to_owned(),
                    payload: str_field(v, "payload").to_owned(),
                }
            })
            .collect()
    }

    fn cert() -> PaypalCertificate {
        PaypalCertificate::from_pem(PAYPAL_CERT_PEM).expect("vector certificate parses")
    }

    #[test]
    fn paypal_vector_verifies() {
        for v in published() {
            assert_eq!(v.verify(), Ok(()));
        }
    }

    #[test]
    fn paypal_signed_message_matches_the_published_one() {
        for (raw, v) in vectors("paypal-sha256withrsa").iter().zip(published()) {
            let message = paypal_signed_message(
                &v.transmission_id,
                &v.transmission_time,
                &v.webhook_id,
                v.payload.as_bytes(),
            );
            assert_eq!(message, str_field(raw, "signed_message"));
            let crc = raw["crc32_decimal"]
                .as_u64()
                .expect("crc32_decimal is a number");
            assert_eq!(u64::from(crc32fast::hash(v.payload.as_bytes())), crc);
            assert_eq!(v.payload.len(), 1463, "payload must be byte-exact");
        }
    }

    #[test]
    fn paypal_certificate_fingerprint_matches_the_published_one() {
        for raw in vectors("paypal-sha256withrsa") {
            let expected = str_field(&raw, "cert_sha256_fingerprint").replace(':', "");
            assert_eq!(hex::encode_upper(cert().sha256_fingerprint()), expected);
        }
    }

    #[test]
    fn paypal_changed_body_byte_is_a_mismatch() {
        for v in published() {
            let changed = Vector {
                payload: flip_byte(&v.payload, v.payload.len() / 2),
                ..v
            };
            assert_eq!(changed.verify(), Err(VerifyError::Mismatch));
        }
    }

    #[test]
    fn paypal_changed_transmission_time_byte_is_a_mismatch() {
        for v in published() {
            let changed = Vector {
                transmission_time: flip_byte(&v.transmission_time, 3),
                ..v
            };
            assert_eq!(changed.verify(), Err(VerifyError::Mismatch));
        }
    }

    #[test]
    fn paypal_changed_transmission_id_byte_is_a_mismatch() {
        for v in published() {
            let changed = Vector {
                transmission_id: flip_byte(&v.transmission_id, 0),
                ..v
            };
            assert_eq!(changed.verify(), Err(VerifyError::Mismatch));
        }
    }

    #[test]
    fn paypal_changed_webhook_id_byte_is_a_mismatch() {
        for v in published() {
            let changed = Vector {
                webhook_id: flip_byte(&v.webhook_id, 0),
                ..v
            };
            assert_eq!(changed.verify(), Err(VerifyError::Mismatch));
            let placeholder = Vector {
                webhook_id: "WEBHOOK_ID".into(),
                ..changed
            };
            assert_eq!(placeholder.verify(), Err(VerifyError::Mismatch));
        }
    }

    #[test]
    fn paypal_changed_signature_byte_is_a_mismatch() {
        for v in published() {
            let changed = Vector {
                signature: flip_byte(&v.signature, 10),
                ..v
            };
            assert_eq!(changed.verify(), Err(VerifyError::Mismatch));
        }
    }

    #[test]
    fn paypal_only_sha256withrsa_is_supported() {
        for v in published() {
            let changed = Vector {
                auth_algo: "SHA1withRSA".into(),
                ..v
            };
            assert!(matches!(
                changed.verify(),
                Err(VerifyError::MalformedSignature(_))
            ));
        }
    }

    #[test]
    fn paypal_empty_signature_header_is_missing() {
        for v in published() {
            let changed = Vector {
                signature: " ".into(),
                ..v
            };
            assert_eq!(changed.verify(), Err(VerifyError::MissingSignature));
        }
    }

    #[test]
    fn paypal_garbage_signature_is_malformed() {
        for v in published() {
            let changed = Vector {
                signature: "not*base64!".into(),
                ..v
            };
            assert!(matches!(
                changed.verify(),
                Err(VerifyError::MalformedSignature(_))
            ));
        }
    }

    #[test]
    fn paypal_missing_fields_are_reported() {
        for v in published() {
            let no_time = Vector {
                transmission_time: String::new(),
                ..v.clone()
            };
            assert_eq!(no_time.verify(), Err(VerifyError::MissingTimestamp));
            let no_id = Vector {
                transmission_id: String::new(),
                ..v.clone()
            };
            assert!(matches!(
                no_id.verify(),
                Err(VerifyError::MalformedSignature(_))
            ));
            let no_webhook = Vector {
                webhook_id: String::new(),
                ..v
            };
            assert_eq!(no_webhook.verify(), Err(VerifyError::NoSecretConfigured));
        }
    }

    #[test]
    fn paypal_certificate_chain_uses_the_first_certificate() {
        let chain = format!("subject=CN = leaf\n{PAYPAL_CERT_PEM}\n{PAYPAL_CERT_PEM}");
        let from_chain = PaypalCertificate::from_pem(&chain).expect("chain parses");
        assert_eq!(from_chain.sha256_fingerprint(), cert().sha256_fingerprint());
    }

    #[test]
    fn paypal_bad_certificate_is_a_bad_key() {
        let truncated = &PAYPAL_CERT_PEM[..PAYPAL_CERT_PEM.len() / 2];
        let corrupted = PAYPAL_CERT_PEM.replacen("MIIHqDCC", "MIIHqDCD", 1);
        for pem in ["", "not a certificate", truncated, corrupted.as_str()] {
            let result = PaypalCertificate::from_pem(pem);
            assert!(matches!(result, Err(VerifyError::BadKey(_))), "{pem:.40}");
        }
    }

    /// A delivery signed as PayPal signs, with the test run's own key pair
    /// ([`pki`]): only a certificate for that key verifies it.
    #[test]
    fn paypal_a_test_key_signature_verifies_with_its_certificate_only() {
        let body = br#"{"id":"WH-TEST","event_type":"PAYMENT.CAPTURE.COMPLETED"}"#;
        let message = paypal_signed_message("tx-1", "2024-01-01T00:00:00Z", "WH-ID", body);
        let signature_b64 = pki::signer().sign_base64(&message);
        let transmission = PaypalTransmission {
            transmission_id: "tx-1",
            transmission_time: "2024-01-01T00:00:00Z",
            webhook_id: "WH-ID",
            auth_algo: "SHA256withRSA",
            signature_b64: &signature_b64,
        };
        let pem = pki::signer().certificate_pem(0, 4_102_444_800);
        let test_cert = PaypalCertificate::from_pem(&pem).expect("test certificate");
        assert_eq!(verify_paypal(&test_cert, &transmission, body), Ok(()));
        assert_eq!(
            verify_paypal(&test_cert, &transmission, b"{}"),
            Err(VerifyError::Mismatch)
        );
        let other_pem = pki::other().certificate_pem(0, 4_102_444_800);
        let other_cert = PaypalCertificate::from_pem(&other_pem).expect("other certificate");
        assert_eq!(
            verify_paypal(&other_cert, &transmission, body),
            Err(VerifyError::Mismatch),
            "a certificate for another key does not vouch for the test key"
        );
        assert_eq!(
            verify_paypal(&cert(), &transmission, body),
            Err(VerifyError::Mismatch),
            "PayPal's certificate does not vouch for the test key"
        );
    }

    /// The vector's certificate: notBefore 2015-03-18T00:00:00Z, notAfter 2017-03-22T12:00:00Z.
    #[test]
    fn paypal_certificate_is_valid_from_not_before_to_not_after_inclusive() {
        let at = |text: &str| Timestamp::parse_rfc3339(text).expect("a time");
        for inside in [
            "2015-03-18T00:00:00Z",
            "2016-10-05T14:57:40Z",
            "2017-03-22T12:00:00Z",
        ] {
            assert_eq!(cert().check_valid_at(at(inside)), Ok(()), "{inside}");
        }
        for outside in ["2015-03-17T23:59:59Z", "2017-03-22T12:00:01Z"] {
            assert_eq!(
                cert().check_valid_at(at(outside)),
                Err(VerifyError::CertificateNotValid {
                    at: outside.to_owned(),
                    not_before: "2015-03-18T00:00:00Z".to_owned(),
                    not_after: "2017-03-22T12:00:00Z".to_owned(),
                }),
                "{outside}"
            );
        }
    }

    #[test]
    fn paypal_generated_certificate_carries_its_validity_dates() {
        let (not_before, not_after) = (1_600_000_000, 1_700_000_000);
        let pem = pki::signer().certificate_pem(not_before, not_after);
        let test_cert = PaypalCertificate::from_pem(&pem).expect("test certificate");
        let at = |unix: u64| Timestamp::from_unix_seconds(i64::try_from(unix).expect("i64"));
        assert_eq!(test_cert.check_valid_at(at(not_before)), Ok(()));
        assert_eq!(test_cert.check_valid_at(at(not_after)), Ok(()));
        for outside in [not_before - 1, not_after + 1] {
            assert!(matches!(
                test_cert.check_valid_at(at(outside)),
                Err(VerifyError::CertificateNotValid { .. })
            ));
        }
    }

    #[test]
    fn paypal_certificate_debug_shows_only_the_fingerprint() {
        let shown = format!("{:?}", cert());
        assert!(shown.contains("f50fc46377dd7708"), "{shown}");
    }
}
