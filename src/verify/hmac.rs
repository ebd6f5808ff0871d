//! Generic "HMAC of the body in a header" scheme, the shape most providers use
//! (GitHub `X-Hub-Signature-256`, Shopify `X-Shopify-Hmac-Sha256`, ...).

use ::hmac::digest::KeyInit;
use ::hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{
    any_match, decode_base64, encode_base64, require_signature, Algorithm, Encoding, SecretSet,
    VerifyError,
};

/// HMAC of the concatenation of `message_parts` under `key`.
///
/// Taking parts avoids copying large bodies just to prepend a timestamp.
pub fn hmac_digest(alg: Algorithm, key: &[u8], message_parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        Algorithm::Sha1 => mac_parts::<Hmac<Sha1>>(key, message_parts),
        Algorithm::Sha256 => mac_parts::<Hmac<Sha256>>(key, message_parts),
        Algorithm::Sha512 => mac_parts::<Hmac<Sha512>>(key, message_parts),
    }
}

/// One generic body for the three hash functions.
fn mac_parts<M: Mac + KeyInit>(key: &[u8], message_parts: &[&[u8]]) -> Vec<u8> {
    // HMAC is defined for keys of any length (RFC 2104 section 2: longer keys are
    // hashed, shorter ones zero-padded), and `Hmac<D>` implements exactly that,
    // so `new_from_slice` has no failing case here.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in message_parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Generic header-signature scheme: the header value is `prefix` (optional,
/// e.g. `"sha256="`, tolerated if present, matched case-insensitively) followed
/// by the HMAC of the raw body in `encoding`.
///
/// Hex is decoded before comparing, so upper- and lower-case hex both verify.
/// Hex of either case, as `hex::decode` reads it (an odd length or any other character is
/// `None`), in one plain loop: the crate's iterator chain cost as much per delivery as all of
/// the ingress's header redaction.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        bytes.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Some(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub prefix: Option<String>,
}

impl HmacScheme {
    /// Accepts if the signature is the HMAC of `body` under ANY secret in the set.
    ///
    /// Errors, in order of checking: no secret, missing/blank header, header
    /// that does not decode to a digest of the right length, no secret matches.
    pub fn verify(
        &self,
        secrets: &SecretSet,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), VerifyError> {
        if secrets.is_empty() {
            return Err(VerifyError::NoSecretConfigured);
        }
        let provided = self.decode_signature(require_signature(signature)?)?;
        let expected: Vec<Vec<u8>> = secrets
            .iter_exposed()
            .map(|secret| hmac_digest(self.algorithm, secret, &[body]))
            .collect();
        if any_match(&expected, std::slice::from_ref(&provided)) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    /// The header value a sender would put on `body`, including the prefix.
    /// Hex is lower-case, base64 is standard with padding.
    pub fn sign(&self, secret: &[u8], body: &[u8]) -> String {
        let digest = hmac_digest(self.algorithm, secret, &[body]);
        let encoded = match self.encoding {
            Encoding::Hex => hex::encode(digest),
            Encoding::Base64 => encode_base64(&digest),
        };
        format!("{}{encoded}", self.prefix.as_deref().unwrap_or(""))
    }

    /// Strips the optional prefix, decodes, and checks the digest length.
    fn decode_signature(&self, header: &str) -> Result<Vec<u8>, VerifyError> {
        let text = self.strip_prefix(header).trim();
        let decoded = match self.encoding {
            Encoding::Hex => decode_hex(text).ok_or_else(|| {
                VerifyError::MalformedSignature("signature is not valid hex".into())
            }),
            Encoding::Base64 => decode_base64(text).map_err(|_| {
                VerifyError::MalformedSignature("signature is not valid base64".into())
            }),
        }?;
        let expected = self.algorithm.output_len();
        if decoded.len() != expected {
            return Err(VerifyError::MalformedSignature(format!(
                "signature decodes to {} bytes, {} needs {expected}",
                decoded.len(),
                self.algorithm
            )));
        }
        Ok(decoded)
    }

    /// Removes the configured prefix if the header starts with it (any case).
    fn strip_prefix<'h>(&self, header: &'h str) -> &'h str {
        let Some(prefix) = self.prefix.as_deref().filter(|p| !p.is_empty()) else {
            return header;
        };
        match header.get(..prefix.len()) {
            Some(head) if head.eq_ignore_ascii_case(prefix) => &header[prefix.len()..],
            _ => header,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"{\"action\":\"opened\",\"number\":1}\n";

    fn secrets(list: &[&str]) -> SecretSet {
        SecretSet::new(list.iter().map(|s| (*s).to_owned()))
    }

    fn github_style() -> HmacScheme {
        HmacScheme {
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: Some("sha256=".into()),
        }
    }

    #[test]
    fn hmac_digest_matches_rfc_4231_test_case_2() {
        // RFC 4231 section 4.3: key "Jefe", data "what do ya want for nothing?".
        let digest = hmac_digest(
            Algorithm::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
        );
        assert_eq!(
            hex::encode(digest),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_digest_matches_rfc_2202_sha1_test_case_2() {
        let digest = hmac_digest(Algorithm::Sha1, b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(
            hex::encode(digest),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn hmac_digest_matches_rfc_4231_sha512_test_case_2() {
        let digest = hmac_digest(
            Algorithm::Sha512,
            b"Jefe",
            &[b"what do ya want for nothing?"],
        );
        assert_eq!(
            hex::encode(digest),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn hex_signatures_decode_as_the_hex_crate_decodes_them() {
        for text in [
            "",
            "00ff",
            "DeadBeef",
            "0",
            "abc",
            "zz",
            "0g",
            "12 4",
            "é0",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert_eq!(decode_hex(text), hex::decode(text).ok(), "{text:?}");
        }
    }

    #[test]
    fn signed_body_verifies() {
        let scheme = github_style();
        let header = scheme.sign(b"It's a Secret to Everybody", BODY);
        assert!(header.starts_with("sha256="));
        assert_eq!(
            scheme.verify(
                &secrets(&["It's a Secret to Everybody"]),
                BODY,
                Some(&header)
            ),
            Ok(())
        );
    }

    #[test]
    fn github_documented_example_verifies() {
        // docs.github.com "Validating webhook deliveries", testing section.
        let scheme = github_style();
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            scheme.verify(
                &secrets(&["It's a Secret to Everybody"]),
                b"Hello, World!",
                Some(header)
            ),
            Ok(())
        );
    }

    #[test]
    fn changed_body_byte_is_a_mismatch() {
        let scheme = github_style();
        let header = scheme.sign(b"key", BODY);
        let mut body = BODY.to_vec();
        body[3] ^= 0x01;
        assert_eq!(
            scheme.verify(&secrets(&["key"]), &body, Some(&header)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn changed_secret_byte_is_a_mismatch() {
        let scheme = github_style();
        let header = scheme.sign(b"key", BODY);
        assert_eq!(
            scheme.verify(&secrets(&["kez"]), BODY, Some(&header)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn second_of_two_secrets_matches_during_rotation() {
        let scheme = github_style();
        let header = scheme.sign(b"new-secret", BODY);
        assert_eq!(
            scheme.verify(&secrets(&["old-secret", "new-secret"]), BODY, Some(&header)),
            Ok(())
        );
    }

    #[test]
    fn hex_comparison_is_case_insensitive() {
        let scheme = github_style();
        let header = scheme.sign(b"key", BODY);
        let upper = format!("sha256={}", header["sha256=".len()..].to_ascii_uppercase());
        assert_ne!(upper, header);
        assert_eq!(
            scheme.verify(&secrets(&["key"]), BODY, Some(&upper)),
            Ok(())
        );
    }

    #[test]
    fn prefix_is_tolerated_in_any_case_or_absent() {
        let scheme = github_style();
        let header = scheme.sign(b"key", BODY);
        let bare = &header["sha256=".len()..];
        let shouted = format!("SHA256={bare}");
        let set = secrets(&["key"]);
        assert_eq!(scheme.verify(&set, BODY, Some(bare)), Ok(()));
        assert_eq!(scheme.verify(&set, BODY, Some(&shouted)), Ok(()));
    }

    #[test]
    fn prefix_is_not_stripped_when_none_is_configured() {
        let scheme = HmacScheme {
            prefix: None,
            ..github_style()
        };
        let header = github_style().sign(b"key", BODY);
        assert!(matches!(
            scheme.verify(&secrets(&["key"]), BODY, Some(&header)),
            Err(VerifyError::MalformedSignature(_))
        ));
    }

    #[test]
    fn base64_encoding_round_trips_like_shopify() {
        let scheme = HmacScheme {
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Base64,
            prefix: None,
        };
        let header = scheme.sign(b"shpss_key", BODY);
        assert_eq!(header.len(), 44, "32 bytes in padded base64: {header}");
        let set = secrets(&["shpss_key"]);
        assert_eq!(scheme.verify(&set, BODY, Some(&header)), Ok(()));
        let unpadded = header.trim_end_matches('=');
        assert_eq!(scheme.verify(&set, BODY, Some(unpadded)), Ok(()));
    }

    #[test]
    fn sha1_round_trips() {
        let scheme = HmacScheme {
            algorithm: Algorithm::Sha1,
            encoding: Encoding::Hex,
            prefix: Some("sha1=".into()),
        };
        let header = scheme.sign(b"key", BODY);
        assert_eq!(header.len(), "sha1=".len() + 40);
        assert_eq!(
            scheme.verify(&secrets(&["key"]), BODY, Some(&header)),
            Ok(())
        );
        assert_eq!(
            scheme.verify(&secrets(&["other"]), BODY, Some(&header)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn sha512_round_trips() {
        let scheme = HmacScheme {
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Base64,
            prefix: None,
        };
        let header = scheme.sign(b"key", BODY);
        assert_eq!(
            scheme.verify(&secrets(&["key"]), BODY, Some(&header)),
            Ok(())
        );
        assert_eq!(
            scheme.verify(&secrets(&["other"]), BODY, Some(&header)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn absent_empty_or_blank_signature_is_missing() {
        let scheme = github_style();
        let set = secrets(&["key"]);
        for header in [None, Some(""), Some("   ")] {
            assert_eq!(
                scheme.verify(&set, BODY, header),
                Err(VerifyError::MissingSignature),
                "{header:?}"
            );
        }
    }

    #[test]
    fn garbage_signature_is_malformed() {
        let scheme = github_style();
        let set = secrets(&["key"]);
        for header in ["sha256=not-hex-at-all", "garbage", "sha256=abcd"] {
            let result = scheme.verify(&set, BODY, Some(header));
            assert!(
                matches!(result, Err(VerifyError::MalformedSignature(_))),
                "{header}: {result:?}"
            );
        }
    }

    #[test]
    fn no_secret_configured_refuses_even_a_plausible_signature() {
        let scheme = github_style();
        let header = scheme.sign(b"", BODY);
        assert_eq!(
            scheme.verify(&SecretSet::new(Vec::new()), BODY, Some(&header)),
            Err(VerifyError::NoSecretConfigured)
        );
    }

    #[test]
    fn malformed_message_never_contains_the_secret() {
        let scheme = github_style();
        let result = scheme.verify(&secrets(&["topsecret"]), BODY, Some("sha256=topsecret"));
        let Err(err) = result else {
            panic!("garbage must not verify");
        };
        assert!(!err.to_string().contains("topsecret"), "{err}");
        assert!(!format!("{err:?}").contains("topsecret"));
    }
}
