//! Who may use the admin API: a bearer token whose SHA-256 digest is one of the configured
//! tokens' (`WHARF_ADMIN_TOKEN`, `admin_tokens = [...]`) or of the digests stored in the
//! database (minted at first start or by `wharf token create`). Only digests are held, and
//! they are compared in constant time against every known digest, so neither a token's
//! content nor its length shows in the answer's timing.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Timestamp;
use crate::http::error::ApiError;
use crate::http::SharedState;
use crate::journal::tokens::{AdminTokenStore, StoredToken};
use crate::journal::JournalError;

/// A token's SHA-256 digest.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The digests the admin API accepts.
pub struct AdminTokens {
    configured: Vec<TokenDigest>,
    stored: RwLock<Vec<TokenDigest>>,
    /// One reload of the stored digests at a time: concurrent misses wait for it.
    reloading: tokio::sync::Mutex<()>,
}

impl AdminTokens {
    pub fn new(configured: &[SecretString]) -> Self {
        Self {
            configured: configured
                .iter()
                .map(|token| token.expose_secret())
                .filter(|token| !token.is_empty())
                .map(digest)
                .collect(),
            stored: RwLock::new(Vec::new()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether any token is configured (the database may hold more).
    pub fn any_configured(&self) -> bool {
        !self.configured.is_empty()
    }

    /// Replaces the digests read from the database.
    pub fn set_stored(&self, tokens: &[StoredToken]) {
        *self.stored.write() = tokens
            .iter()
            .filter_map(|token| hex::decode(&token.digest).ok())
            .filter_map(|bytes| TokenDigest::try_from(bytes).ok())
            .collect();
    }

    /// Compares with every known digest, without stopping at the first match.
    fn knows(&self, presented: &TokenDigest) -> bool {
        let stored = self.stored.read();
        let mut found = subtle::Choice::from(0);
        for known in self.configured.iter().chain(stored.iter()) {
            found |= known.ct_eq(presented);
        }
        found.into()
    }

    /// Whether `presented` is an admin token. An unknown one makes the stored digests be read
    /// again (one read at a time; the table holds a few rows): a token minted since, by
    /// `wharf token create` or by another instance, works without a restart.
    pub async fn allows(&self, presented: &str, store: &dyn AdminTokenStore) -> bool {
        let presented = digest(presented);
        if self.knows(&presented) {
            return true;
        }
        let _reloading = self.reloading.lock().await;
        if self.knows(&presented) {
            return true;
        }
        self.reload_locked(store).await;
        self.knows(&presented)
    }

    /// Whether `accept` holds for any known digest; it is asked of every one, without stopping
    /// at the first that passes (timing shows nothing about which token matched).
    pub fn any_known(&self, accept: impl Fn(&TokenDigest) -> bool) -> bool {
        let stored = self.stored.read();
        self.configured
            .iter()
            .chain(stored.iter())
            .fold(false, |found, digest| accept(digest) | found)
    }

    /// Reads the stored digests again (one read at a time): a token minted since, by
    /// `wharf token create` or by another instance, becomes known.
    pub async fn reload(&self, store: &dyn AdminTokenStore) {
        let _reloading = self.reloading.lock().await;
        self.reload_locked(store).await;
    }

    async fn reload_locked(&self, store: &dyn AdminTokenStore) {
        match store.admin_tokens().await {
            Ok(tokens) => self.set_stored(&tokens),
            Err(error) => tracing::warn!(%error, "cannot read the stored admin tokens"),
        }
    }
}

/// A fresh admin token: 32 random bytes from the operating system, URL-safe base64, with a
/// `wharf_` prefix so that secret scanners and people recognise it.
pub fn mint() -> Result<SecretString, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(SecretString::from(format!(
        "wharf_{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// Mints a token and stores its digest; with `only_if_none`, only when the database holds no
/// token yet (`None` then: someone else minted the first one).
pub async fn mint_and_store(
    store: &dyn AdminTokenStore,
    label: &str,
    now: Timestamp,
    only_if_none: bool,
) -> Result<Option<SecretString>, MintError> {
    let token = mint().map_err(MintError::Random)?;
    let stored = StoredToken {
        digest: hex::encode(digest(token.expose_secret())),
        label: label.to_owned(),
        created_at: now,
    };
    let added = store.add_admin_token(stored, only_if_none).await?;
    Ok(added.then_some(token))
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The middleware: `Authorization: Bearer TOKEN` or 401.
pub async fn require_token(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if !presented.is_empty()
        && state
            .admin_tokens
            .allows(presented, state.storage.tokens.as_ref())
            .await
    {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin bearer token is required (Authorization: Bearer TOKEN)",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_digests_pass_and_empty_tokens_are_ignored() {
        let tokens = AdminTokens::new(&[SecretString::from("alpha"), SecretString::from("")]);
        assert!(tokens.knows(&digest("alpha")));
        assert!(!tokens.knows(&digest("")));
        assert!(!tokens.knows(&digest("alph")));
        tokens.set_stored(&[StoredToken {
            digest: hex::encode(digest("beta")),
            label: "test".into(),
            created_at: Timestamp(0),
        }]);
        assert!(tokens.knows(&digest("beta")));
        assert!(tokens.knows(&digest("alpha")));
    }

    #[test]
    fn minted_tokens_are_long_random_and_prefixed() {
        let one = mint().expect("random");
        let two = mint().expect("random");
        assert!(one.expose_secret().starts_with("wharf_"));
        assert_eq!(one.expose_secret().len(), "wharf_".len() + 43);
        assert_ne!(one.expose_secret(), two.expose_secret());
    }
}
