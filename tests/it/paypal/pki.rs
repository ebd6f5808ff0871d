//! A signing identity like PayPal's, made in the test run: an RSA-2048 key pair and
//! self-signed X.509 certificates for its public key (`sha256WithRSAEncryption`), so tests
//! can sign deliveries exactly as PayPal does (RSA PKCS#1 v1.5 with SHA-256, base64) and serve
//! the certificate that proves them. Keys are generated once per test process.
//!
//! Shared by the `it` binary (`paypal::pki`) and the library's unit tests (through `#[path]`),
//! so it names only crates, never `crate::` or `wharf::`.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::rand_core::OsRng;
use rsa::signature::{Keypair, SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::GeneralizedTime;
use x509_cert::der::pem::LineEnding;
use x509_cert::der::EncodePem;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// PayPal's key size for its webhook certificates.
const KEY_BITS: usize = 2048;

/// The key that signs the test deliveries.
static SIGNER: LazyLock<SigningIdentity> = LazyLock::new(SigningIdentity::generate);
/// A second key, whose certificates must not vouch for what [`SIGNER`] signed.
static OTHER: LazyLock<SigningIdentity> = LazyLock::new(SigningIdentity::generate);

/// The identity that signs the test deliveries.
pub fn signer() -> &'static SigningIdentity {
    &SIGNER
}

/// Another identity: its certificate is the "right URL, wrong key" case.
pub fn other() -> &'static SigningIdentity {
    &OTHER
}

/// A private key and the means to certify its public half.
pub struct SigningIdentity {
    key: SigningKey<Sha256>,
}

impl SigningIdentity {
    fn generate() -> Self {
        let key = RsaPrivateKey::new(&mut OsRng, KEY_BITS).expect("RSA key generation");
        Self {
            key: SigningKey::new(key),
        }
    }

    /// `message` signed with RSA PKCS#1 v1.5 / SHA-256, in base64 as
    /// `PAYPAL-TRANSMISSION-SIG` carries it.
    pub fn sign_base64(&self, message: &str) -> String {
        let signature = self.key.sign(message.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }

    /// A self-signed certificate for this key, valid from `not_before` to `not_after`
    /// (Unix seconds), in PEM as PayPal serves it at `PAYPAL-CERT-URL`.
    pub fn certificate_pem(&self, not_before: u64, not_after: u64) -> String {
        let time = |unix: u64| {
            GeneralizedTime::from_unix_duration(Duration::from_secs(unix))
                .map(Time::GeneralTime)
                .expect("a time X.509 can hold")
        };
        let validity = Validity {
            not_before: time(not_before),
            not_after: time(not_after),
        };
        let subject =
            Name::from_str("CN=messageverificationcerts.wharf-test.invalid,O=Wharf tests")
                .expect("a distinguished name");
        let public_key = SubjectPublicKeyInfoOwned::from_key(self.key.verifying_key())
            .expect("an RSA public key info");
        let serial = SerialNumber::new(&[1]).expect("a serial number");
        CertificateBuilder::new(
            Profile::Root,
            serial,
            validity,
            subject,
            public_key,
            &self.key,
        )
        .expect("a certificate builder")
        .build::<Signature>()
        .expect("a signed certificate")
        .to_pem(LineEnding::LF)
        .expect("PEM")
    }
}
