//! Every provider Wharf knows, and the sources a configuration made of them.
//!
//! Adding a provider is one module that implements [`Provider`] (its settings, its routes and
//! methods, its replies, its identification and normalization) plus one line in
//! [`PROVIDERS`]; its ledger tables add one migration per backend, and are named by
//! [`Provider::ledger_tables`] so that a copy between backends carries them.

use std::collections::BTreeMap;

use super::{
    cartpanda, generic_hmac, pancake, paypal, paystack, refract, standard_webhooks, stripe,
    tradingview, SharedSource,
};
use crate::config::{invalid, ConfigError, Environment};
use crate::ledger::Table;
use crate::verify::SecretSet;

/// The providers, in the order their built-in sources are listed.
pub static PROVIDERS: &[&dyn Provider] = &[
    &cartpanda::CartPandaProvider,
    &refract::RefractProvider,
    &pancake::PancakeProvider::PANCAKE,
    &pancake::PancakeProvider::POS,
    &stripe::StripeProvider,
    &paystack::PaystackProvider,
    &paypal::PaypalProvider,
    &tradingview::TradingViewProvider,
    &standard_webhooks::StandardWebhooksProvider,
    &generic_hmac::GenericHmacProvider,
];

/// The provider whose `kind` is `kind`.
pub fn provider(kind: &str) -> Option<&'static dyn Provider> {
    PROVIDERS
        .iter()
        .copied()
        .find(|provider| provider.kind() == kind)
}

/// A kind of sender: builds its sources from configuration. Settings are the provider's own
/// (a serde struct read from its TOML table), so the configuration loader knows no provider.
pub trait Provider: Sync {
    /// The name in `kind = "…"` and of the provider's own `[kind]` section.
    fn kind(&self) -> &'static str;

    /// The source that exists with no configuration at all, named after the provider and
    /// answering its seed's routes, from the `[kind]` section (empty when absent) and the
    /// seed's environment variables. Without a secret it exists and refuses traffic. `None`
    /// for a family of senders that exists only when declared under `[sources.NAME]`.
    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let _ = env;
        if section.is_empty() {
            return Ok(None);
        }
        Err(invalid(
            self.kind(),
            format!(
                "\"{}\" has no built-in source; declare one as [sources.NAME] with kind = \"{}\"",
                self.kind(),
                self.kind()
            ),
        ))
    }

    /// The ledger tables this provider writes through [`crate::ledger::RowChange`], in the
    /// order a copy to another backend must write them (`wharf migrate --from … --to …`).
    fn ledger_tables(&self) -> &'static [&'static Table] {
        &[]
    }

    /// A source declared as `[sources.NAME]` with `kind = "<kind>"`. `secrets` is already
    /// resolved (`WHARF_SOURCE_<NAME>_SECRET` over the section's `secrets`); `section` holds
    /// the provider's own keys.
    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError>;
}

/// Reads a provider's settings struct from its TOML table, naming the section in errors.
pub fn settings<T: serde::de::DeserializeOwned>(
    context: &str,
    section: toml::Table,
) -> Result<T, ConfigError> {
    toml::Value::Table(section)
        .try_into()
        .map_err(|error: toml::de::Error| invalid(context, error.message()))
}

/// The sources of one configuration, by name.
#[derive(Default, Clone)]
pub struct Registry {
    sources: BTreeMap<String, SharedSource>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source; a later source with the same name replaces the earlier one.
    pub fn insert(&mut self, source: SharedSource) {
        self.sources.insert(source.name().to_owned(), source);
    }

    pub fn get(&self, name: &str) -> Option<&SharedSource> {
        self.sources.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &SharedSource> {
        self.sources.values()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{HeaderMap, Method};

    use crate::clock::Timestamp;
    use crate::config::Config;
    use crate::sources::IncomingRequest;
    use crate::verify::VerifyError;

    fn blank_post(path: &str) -> IncomingRequest {
        IncomingRequest {
            method: Method::POST,
            path: path.to_owned(),
            query: None,
            headers: HeaderMap::new(),
            body: bytes::Bytes::from_static(b"{}"),
            received_at: Timestamp::from_unix_seconds(1_700_000_000),
            path_params: Vec::new(),
        }
    }

    /// What the start-up summary says about a source is what its ingress does: "MISSING"
    /// exactly when it answers `no_secret_configured`.
    #[test]
    fn secret_configured_agrees_with_authenticate_for_every_source() {
        let text = "[sources.billing]\nkind = \"standard-webhooks\"\n\
                    [sources.shop]\nkind = \"hmac\"\nsignature_header = \"X-Sig\"";
        let none = Config::from_toml(text, &BTreeMap::new()).expect("config");
        for source in none.sources.iter() {
            assert!(!source.secret_configured(), "{}", source.name());
            let refused = source.authenticate(&blank_post("/in/x"), Timestamp(0));
            assert_eq!(
                refused,
                Err(VerifyError::NoSecretConfigured),
                "{}",
                source.name()
            );
        }
        let env: BTreeMap<String, String> = [
            ("CARTPANDA_WEBHOOK_SECRET", "a"),
            ("REFRACT_WEBHOOK_TOKEN", "b"),
            ("PANCAKE_API_KEY", "c"),
            ("PANCAKE_POS_API_KEY", "d"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_e"),
            ("PAYSTACK_SECRET_KEY", "f"),
            ("PAYPAL_WEBHOOK_ID", "g"),
            ("TRADINGVIEW_WEBHOOK_SECRET", "h"),
            ("WHARF_SOURCE_BILLING_SECRET", "whsec_aGVsbG8="),
            ("WHARF_SOURCE_SHOP_SECRET", "i"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let all = Config::from_toml(text, &env).expect("config");
        for source in all.sources.iter() {
            assert!(source.secret_configured(), "{}", source.name());
            let answer = source.authenticate(&blank_post("/in/x"), Timestamp(0));
            assert_ne!(
                answer,
                Err(VerifyError::NoSecretConfigured),
                "{}",
                source.name()
            );
        }
    }

    /// The `{name}` segments of the source's route that `path` matches, as the router
    /// captures them.
    fn path_params(source: &dyn crate::sources::Source, path: &str) -> Vec<(String, String)> {
        let segments: Vec<&str> = path.split('/').collect();
        source
            .routes()
            .iter()
            .map(|route| route.path.split('/').collect::<Vec<_>>())
            .filter(|pattern| pattern.len() == segments.len())
            .find_map(|pattern| {
                let mut params = Vec::new();
                for (want, got) in pattern.iter().zip(&segments) {
                    match want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                        Some(name) => params.push((name.to_owned(), (*got).to_owned())),
                        None if want == got => {}
                        None => return None,
                    }
                }
                Some(params)
            })
            .unwrap_or_default()
    }

    /// What `wharf trigger` sends is what the ingress accepts: every sample of every source
    /// authenticates and identifies, in process (the `trigger` integration test then runs
    /// them through a real server into the ledger).
    #[test]
    fn every_sample_authenticates_and_identifies_as_its_event() {
        let text = "[sources.billing]\nkind = \"standard-webhooks\"";
        let env: BTreeMap<String, String> = [
            ("CARTPANDA_WEBHOOK_SECRET", "a"),
            ("REFRACT_WEBHOOK_TOKEN", "b"),
            ("PANCAKE_API_KEY", "c"),
            ("PANCAKE_POS_API_KEY", "d"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_e"),
            ("PAYSTACK_SECRET_KEY", "f"),
            ("TRADINGVIEW_WEBHOOK_SECRET", "h"),
            ("WHARF_SOURCE_BILLING_SECRET", "whsec_aGVsbG8="),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::from_toml(text, &env).expect("config");
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let mut samples = 0;
        for source in config.sources.iter() {
            for event in source.sample_events() {
                let sample = source.sample(event, now).expect("sample");
                let (path, query) = match sample.path_and_query.split_once('?') {
                    Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
                    None => (sample.path_and_query.clone(), None),
                };
                let mut headers = HeaderMap::new();
                for (name, value) in &sample.headers {
                    headers.insert(
                        axum::http::HeaderName::try_from(name.as_str()).expect("name"),
                        value.parse().expect("value"),
                    );
                }
                let request = IncomingRequest {
                    method: sample.method.clone(),
                    path_params: path_params(source.as_ref(), &path),
                    path,
                    query,
                    headers,
                    body: sample.body.clone(),
                    received_at: now,
                };
                let verified = crate::sources::authenticate(source.as_ref(), request, now)
                    .unwrap_or_else(|rejected| {
                        panic!("{} {event}: {:?}", source.name(), rejected.error)
                    });
                let identity = source
                    .identify(&verified)
                    .unwrap_or_else(|error| panic!("{} {event}: {error}", source.name()));
                assert_eq!(identity.event_type, event, "{}", source.name());
                samples += 1;
            }
        }
        assert!(samples >= 24, "{samples}");
    }
}
