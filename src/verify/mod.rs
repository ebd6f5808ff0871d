//! Signature schemes that webhook sources share: generic HMAC headers, Standard
//! Webhooks, Stripe and PayPal. Invariant: every comparison of secret-derived
//! bytes is constant-time, and nothing here does I/O or reads the clock.

pub mod address;
pub mod hmac;
pub mod paypal;
pub mod standard_webhooks;
pub mod stripe;

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

pub use self::address::ProxiedAllowlist;
pub use self::hmac::{hmac_digest, HmacScheme};
pub use self::paypal::{
    paypal_signed_message, verify_paypal, PaypalCertificate, PaypalTransmission,
};
pub use self::standard_webhooks::StandardWebhooks;
pub use self::stripe::{StripeScheme, StripeTimestamp};

/// How far (in either direction) a signed timestamp may be from "now" by default.
/// Five minutes is what Standard Webhooks and Stripe both recommend.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Hash function under an HMAC. Parsed from configuration, hence `FromStr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Only for providers that still sign with it (e.g. legacy GitHub `X-Hub-Signature`).
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The configuration spelling, so `parse` and `as_str` round-trip.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes; lets a wrong-length signature be reported as
    /// malformed instead of as a mismatch.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(UnknownName::new("algorithm", s, "sha1, sha256, sha512")),
        }
    }
}

/// Text encoding of a digest inside a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    /// The configuration spelling, so `parse` and `as_str` round-trip.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            _ => Err(UnknownName::new("encoding", s, "hex, base64")),
        }
    }
}

/// A configuration word that names no known [`Algorithm`] or [`Encoding`].
/// Kept apart from [`VerifyError`] because it is a config error, not a request error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct UnknownName {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

impl UnknownName {
    fn new(kind: &'static str, value: &str, expected: &'static str) -> Self {
        Self {
            kind,
            value: value.to_owned(),
            expected,
        }
    }
}

/// Several secrets at once, so a source can rotate keys without dropping
/// traffic: a request is accepted if any of them produced its signature.
///
/// Each secret is a [`SecretString`], zeroed on drop; `Debug` prints only how
/// many there are, so the set can sit inside logged config structs.
#[derive(Clone, Default)]
pub struct SecretSet {
    secrets: Vec<SecretString>,
}

impl SecretSet {
    /// Empty strings are dropped: an unset env var must not become a valid
    /// (and trivially forgeable) empty HMAC key.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let secrets = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(SecretString::from)
            .collect();
        Self { secrets }
    }

    /// True when no usable secret is configured; verifiers then refuse all traffic.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Number of usable (non-empty) secrets.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// The first secret as text, for a source that must present it to its provider's API
    /// (Paystack's verify call). Crate-private, like [`SecretSet::iter_exposed`].
    pub(crate) fn first_exposed(&self) -> Option<&str> {
        self.secrets.first().map(|secret| secret.expose_secret())
    }

    /// The raw bytes of each secret, in configuration order. Crate-private so
    /// that only verifiers ever see the secret material.
    pub(crate) fn iter_exposed(&self) -> impl Iterator<Item = &[u8]> {
        self.secrets.iter().map(|s| s.expose_secret().as_bytes())
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSet")
            .field("len", &self.secrets.len())
            .field("secrets", &"[REDACTED]")
            .finish()
    }
}

/// Why a request failed verification. Messages describe the request or the
/// configuration, never secret material, so they are safe to log and return.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature header is absent or empty.
    #[error("signature header is missing or empty")]
    MissingSignature,
    /// The signature header is present but cannot be decoded.
    #[error("signature is malformed: {0}")]
    MalformedSignature(String),
    /// No configured secret produced this signature.
    #[error("signature does not match any configured secret")]
    Mismatch,
    #[error("signature timestamp is missing")]
    MissingTimestamp,
    #[error("signature timestamp is not a valid integer")]
    MalformedTimestamp,
    /// `age_secs` is `now - timestamp`: negative when the timestamp is in the future.
    #[error("signature timestamp is {age_secs}s old, outside the tolerance of {tolerance_secs}s")]
    TimestampOutsideTolerance { age_secs: i64, tolerance_secs: u64 },
    /// The source has no secret: it must refuse traffic rather than accept it unsigned.
    #[error("no secret is configured for this source")]
    NoSecretConfigured,
    /// A configured key is unusable (e.g. `whsec_` secret not base64, bad certificate).
    #[error("configured key is unusable: {0}")]
    BadKey(String),
    /// A token-authenticated source got no token (`where` says where it may be given).
    #[error("no token in the request: give it as {0}")]
    MissingToken(&'static str),
    #[error("the token does not match any configured token")]
    WrongToken,
    /// The address a trusted proxy reported is not one the provider sends from.
    #[error("source address {0} is not allowed")]
    AddressNotAllowed(String),
    /// A signing certificate was expired or not yet valid at the moment that counts (RFC 3339).
    #[error("certificate is valid from {not_before} until {not_after}, not at {at}")]
    CertificateNotValid {
        at: String,
        not_before: String,
        not_after: String,
    },
}

impl VerifyError {
    /// Stable snake_case identifier for metrics, logs and API responses.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingSignature => "missing_signature",
            VerifyError::MalformedSignature(_) => "malformed_signature",
            VerifyError::Mismatch => "signature_mismatch",
            VerifyError::MissingTimestamp => "missing_timestamp",
            VerifyError::MalformedTimestamp => "malformed_timestamp",
            VerifyError::TimestampOutsideTolerance { .. } => "timestamp_outside_tolerance",
            VerifyError::NoSecretConfigured => "no_secret_configured",
            VerifyError::BadKey(_) => "bad_key",
            VerifyError::MissingToken(_) => "missing_token",
            VerifyError::WrongToken => "wrong_token",
            VerifyError::AddressNotAllowed(_) => "address_not_allowed",
            VerifyError::CertificateNotValid { .. } => "certificate_not_valid",
        }
    }
}

/// Constant-time equality, so response timing does not reveal how many leading
/// bytes of a forged signature were right. Different lengths are unequal (the
/// length itself is public).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Checks a shared-secret token (for senders that cannot sign: a token in the URL or a
/// header). Both sides are hashed first, so the comparison is constant-time and reveals
/// neither the token's bytes nor its length; every configured token is compared.
pub fn verify_token(
    secrets: &SecretSet,
    provided: Option<&str>,
    where_given: &'static str,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    let provided = provided
        .filter(|token| !token.is_empty())
        .ok_or(VerifyError::MissingToken(where_given))?;
    let digest = |bytes: &[u8]| sha2::Sha256::digest(bytes).to_vec();
    let expected: Vec<Vec<u8>> = secrets.iter_exposed().map(digest).collect();
    if any_match(&expected, &[digest(provided.as_bytes())]) {
        Ok(())
    } else {
        Err(VerifyError::WrongToken)
    }
}

/// True if any provided signature equals any expected one. Every pair is
/// compared (no early exit), so timing does not reveal which secret matched.
fn any_match(expected: &[Vec<u8>], provided: &[Vec<u8>]) -> bool {
    expected.iter().fold(false, |found, want| {
        provided
            .iter()
            .fold(found, |found, got| found | constant_time_eq(want, got))
    })
}

/// Checks `|now - timestamp| <= tolerance`; shared by every timestamped scheme.
/// Both directions are bounded so a far-future timestamp cannot be replayed later.
fn check_tolerance(timestamp: i64, now_unix: i64, tolerance_secs: u64) -> Result<(), VerifyError> {
    let age_secs = now_unix.saturating_sub(timestamp);
    if age_secs.unsigned_abs() > tolerance_secs {
        return Err(VerifyError::TimestampOutsideTolerance {
            age_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

/// Parses a unix-seconds header value; surrounding whitespace is tolerated.
fn parse_unix_timestamp(raw: Option<&str>) -> Result<i64, VerifyError> {
    let raw = raw.map(str::trim).filter(|s| !s.is_empty());
    let raw = raw.ok_or(VerifyError::MissingTimestamp)?;
    raw.parse::<i64>()
        .map_err(|_| VerifyError::MalformedTimestamp)
}

/// Returns the trimmed signature header, or `MissingSignature` if it is absent or blank.
fn require_signature(signature: Option<&str>) -> Result<&str, VerifyError> {
    signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(VerifyError::MissingSignature)
}

/// Standard-alphabet base64 that accepts input with or without `=` padding:
/// some senders strip it, and padding carries no information.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 from a header or a configured key (padding optional).
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    BASE64_LENIENT.decode(text)
}

/// Encodes with the standard alphabet and padding, the form every scheme here emits.
fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Published vectors, compiled in so tests never read the filesystem at run time.
#[cfg(test)]
pub(crate) mod fixtures {
    const VECTORS_JSON: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vectors/vectors.json"
    ));

    /// The sandbox certificate the PayPal vector was signed with (expired 2017).
    pub(crate) const PAYPAL_CERT_PEM: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vectors/paypal-sandbox-CERT-360caa42-fca2a594-a5cafa77.pem"
    ));

    /// Every vector whose `scheme` field equals `scheme`; panics if there is none,
    /// so a renamed scheme cannot silently turn a test into a no-op.
    pub(crate) fn vectors(scheme: &str) -> Vec<serde_json::Value> {
        let all: serde_json::Value =
            serde_json::from_str(VECTORS_JSON).expect("vectors.json is valid JSON");
        let found: Vec<serde_json::Value> = all["vectors"]
            .as_array()
            .expect("vectors.json has a `vectors` array")
            .iter()
            .filter(|v| v["scheme"] == scheme)
            .cloned()
            .collect();
        assert!(!found.is_empty(), "no vectors for scheme {scheme}");
        found
    }

    /// A string field of a vector.
    pub(crate) fn str_field<'a>(vector: &'a serde_json::Value, key: &str) -> &'a str {
        vector[key]
            .as_str()
            .unwrap_or_else(|| panic!("vector field `{key}` is a string"))
    }

    /// An integer field of a vector.
    pub(crate) fn i64_field(vector: &serde_json::Value, key: &str) -> i64 {
        vector[key]
            .as_i64()
            .unwrap_or_else(|| panic!("vector field `{key}` is an integer"))
    }

    /// `text` with the byte at `index` replaced by a different ASCII character,
    /// for "one changed byte must not verify" tests.
    pub(crate) fn flip_byte(text: &str, index: usize) -> String {
        let mut bytes = text.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).expect("flipping an ASCII byte keeps UTF-8 valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_parses_case_insensitively() {
        assert_eq!("SHA256".parse::<Algorithm>(), Ok(Algorithm::Sha256));
        assert_eq!("sha1".parse::<Algorithm>(), Ok(Algorithm::Sha1));
        assert_eq!("Sha512".parse::<Algorithm>(), Ok(Algorithm::Sha512));
        assert!("md5".parse::<Algorithm>().is_err());
    }

    #[test]
    fn algorithm_and_encoding_round_trip_through_display() {
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            assert_eq!(alg.to_string().parse::<Algorithm>(), Ok(alg));
        }
        for enc in [Encoding::Hex, Encoding::Base64] {
            assert_eq!(enc.to_string().parse::<Encoding>(), Ok(enc));
        }
    }

    #[test]
    fn encoding_parses_case_insensitively() {
        assert_eq!("HEX".parse::<Encoding>(), Ok(Encoding::Hex));
        assert_eq!("base64".parse::<Encoding>(), Ok(Encoding::Base64));
        assert!("base32".parse::<Encoding>().is_err());
    }

    #[test]
    fn secret_set_drops_empty_strings() {
        let set = SecretSet::new(["".to_owned(), "a".to_owned(), String::new()]);
        assert_eq!(set.len(), 1);
        assert!(!set.is_empty());
        assert!(SecretSet::new(Vec::<String>::new()).is_empty());
        assert!(SecretSet::new(["".to_owned()]).is_empty());
    }

    #[test]
    fn secret_set_exposes_bytes_in_order() {
        let set = SecretSet::new(["one".to_owned(), "two".to_owned()]);
        let exposed: Vec<&[u8]> = set.iter_exposed().collect();
        assert_eq!(exposed, vec![b"one".as_slice(), b"two".as_slice()]);
    }

    #[test]
    fn secret_set_debug_does_not_contain_the_secret() {
        let set = SecretSet::new(["hunter2-very-secret".to_owned(), "s3cond".to_owned()]);
        let shown = format!("{set:?} {set:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cond"), "{shown}");
        assert!(shown.contains("len: 2"), "{shown}");
    }

    #[test]
    fn constant_time_eq_compares_bytes_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn tokens_are_compared_whole_and_absent_ones_named() {
        let tokens = SecretSet::new(["t0ken-a".to_owned(), "t0ken-b".to_owned()]);
        assert_eq!(verify_token(&tokens, Some("t0ken-b"), "?token="), Ok(()));
        assert_eq!(
            verify_token(&tokens, Some("t0ken-"), "?token="),
            Err(VerifyError::WrongToken),
            "a prefix is not the token"
        );
        assert_eq!(
            verify_token(&tokens, Some(""), "?token="),
            Err(VerifyError::MissingToken("?token="))
        );
        assert_eq!(
            verify_token(&SecretSet::default(), Some("x"), "?token="),
            Err(VerifyError::NoSecretConfigured)
        );
    }

    #[test]
    fn error_codes_are_snake_case_and_distinct() {
        let all = [
            VerifyError::MissingSignature,
            VerifyError::MalformedSignature("x".into()),
            VerifyError::Mismatch,
            VerifyError::MissingTimestamp,
            VerifyError::MalformedTimestamp,
            VerifyError::TimestampOutsideTolerance {
                age_secs: 1,
                tolerance_secs: 0,
            },
            VerifyError::NoSecretConfigured,
            VerifyError::BadKey("x".into()),
            VerifyError::MissingToken("x"),
            VerifyError::WrongToken,
            VerifyError::CertificateNotValid {
                at: "x".into(),
                not_before: "x".into(),
                not_after: "x".into(),
            },
        ];
        let codes: Vec<&str> = all.iter().map(VerifyError::code).collect();
        assert_eq!(
            codes,
            [
                "missing_signature",
                "malformed_signature",
                "signature_mismatch",
                "missing_timestamp",
                "malformed_timestamp",
                "timestamp_outside_tolerance",
                "no_secret_configured",
                "bad_key",
                "missing_token",
                "wrong_token",
                "certificate_not_valid",
            ]
        );
    }

    #[test]
    fn tolerance_accepts_boundary_and_rejects_beyond_in_both_directions() {
        assert_eq!(check_tolerance(1000, 1300, 300), Ok(()));
        assert_eq!(check_tolerance(1300, 1000, 300), Ok(()));
        assert_eq!(
            check_tolerance(1000, 1301, 300),
            Err(VerifyError::TimestampOutsideTolerance {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check_tolerance(1301, 1000, 300),
            Err(VerifyError::TimestampOutsideTolerance {
                age_secs: -301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn tolerance_does_not_overflow_on_extreme_timestamps() {
        assert!(check_tolerance(i64::MIN, i64::MAX, 300).is_err());
        assert!(check_tolerance(i64::MAX, i64::MIN, 300).is_err());
    }
}
