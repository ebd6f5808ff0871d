//! Stripe as a source: seed 003's `POST /api/webhooks/stripe` and seed 004's
//! `POST /api/payments/stripe/webhook`, one source answering both in each seed's words. Signed
//! with `Stripe-Signature` ([`StripeScheme`]) under any of several endpoint secrets
//! (`STRIPE_WEBHOOK_SECRET`, comma-separated), deduplicated by event id.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::billing::{BillingReport, PlanChange, SubscriptionChange, SUBSCRIPTIONS, USER_PLANS};
use super::event::{self, Reading};
use super::payments::{
    DisputeChange, PaymentChange, RefundChange, DISPUTES, ORDER_STATUS_HISTORY, PAYMENTS, REFUNDS,
};
use crate::clock::Timestamp;
use crate::config::{secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::{check_id, LedgerChange, RowChange, Table};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized, Receipt, Reply, Route,
    SharedSource, Source, Verified,
};
use crate::verify::{SecretSet, StripeScheme, VerifyError, DEFAULT_TOLERANCE_SECS};

const KIND: &str = "stripe";

/// Seed 003's route.
pub const WEBHOOKS_ROUTE: &str = "/api/webhooks/stripe";
/// Seed 004's route.
pub const PAYMENTS_ROUTE: &str = "/api/payments/stripe/webhook";

const SIGNATURE_HEADER: &str = "stripe-signature";

/// A Stripe account's webhook endpoint (or several, sharing this source's secrets).
#[derive(Debug)]
pub struct Stripe {
    name: String,
    secrets: SecretSet,
    scheme: StripeScheme,
    routes: Vec<Route>,
}

impl Stripe {
    /// A Stripe endpoint answered at `/in/{name}` only.
    pub fn new(name: impl Into<String>, secrets: SecretSet, tolerance_secs: u64) -> Self {
        Self {
            name: name.into(),
            secrets,
            scheme: StripeScheme { tolerance_secs },
            routes: Vec::new(),
        }
    }

    /// The built-in source, at seed 003's and seed 004's routes.
    pub fn seed(secrets: SecretSet, tolerance_secs: u64) -> Self {
        Self {
            routes: vec![Route::post(WEBHOOKS_ROUTE), Route::post(PAYMENTS_ROUTE)],
            ..Self::new(KIND, secrets, tolerance_secs)
        }
    }
}

/// `[stripe]` or `[sources.NAME] kind = "stripe"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    secrets: Vec<String>,
    /// How far `t=` may be from now, in seconds (Stripe's libraries use 300).
    tolerance_secs: Option<u64>,
}

/// Seeds 003 and 004: endpoint secrets from `STRIPE_WEBHOOK_SECRET` (comma-separated, all
/// accepted at once while rotating).
pub struct StripeProvider;

impl Provider for StripeProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn ledger_tables(&self) -> &'static [&'static Table] {
        static TABLES: [&Table; 6] = [
            &PAYMENTS,
            &REFUNDS,
            &DISPUTES,
            &ORDER_STATUS_HISTORY,
            &SUBSCRIPTIONS,
            &USER_PLANS,
        ];
        &TABLES
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let file: FileSettings = registry::settings(KIND, section)?;
        let secrets = secrets_from_env(env.var("STRIPE_WEBHOOK_SECRET")).unwrap_or(file.secrets);
        Ok(Some(Arc::new(Stripe::seed(
            SecretSet::new(secrets),
            file.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS),
        ))))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let file: FileSettings = registry::settings(&format!("sources.{name}"), section)?;
        Ok(Arc::new(Stripe::new(
            name,
            secrets,
            file.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS),
        )))
    }
}

impl Source for Stripe {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    fn secret_configured(&self) -> bool {
        !self.secrets.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, now: Timestamp) -> Result<(), VerifyError> {
        self.scheme
            .verify(
                &self.secrets,
                request.header(SIGNATURE_HEADER),
                &request.body,
                now.unix_seconds(),
            )
            .map(|_| ())
    }

    /// Stripe retries an event with the same id (`evt_…`), so the id is the dedup key.
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let payload = request.json()?;
        let id =
            crate::sources::json::text(payload, "/id").ok_or(IdentifyError::MissingField("id"))?;
        check_id(&id)
            .map_err(|reason| IdentifyError::Unparseable(format!("the event id {reason}")))?;
        let event_type = crate::sources::json::text(payload, "/type")
            .ok_or(IdentifyError::MissingField("type"))?;
        Ok(Identity {
            event_id: Some(id.clone()),
            event_type,
            dedup_key: id,
        })
    }

    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let payload = crate::sources::json::parse_stored(&delivery.body)?;
        Ok(match event::read(&payload)? {
            Reading::Ignored(reason) => Normalized::Ignore(reason),
            reading => match changes(reading) {
                Some(changes) => Normalized::Changes(changes),
                None => Normalized::Ignore(
                    "an invoice of no subscription: nothing for the subscription ledger".to_owned(),
                ),
            },
        })
    }

    /// Seed 003 answers `{ received: true }`, seed 004 `{"status": "success"}`; both with
    /// Wharf's receipt beside it.
    fn accepted(&self, receipt: &Receipt<'_>, request: &IncomingRequest) -> Reply {
        let mut body = json!({
            "received": true,
            "duplicate": receipt.duplicate,
            "delivery_id": receipt.delivery_id,
            "event_type": receipt.identity.event_type,
        });
        if request.path == PAYMENTS_ROUTE {
            body["status"] = json!("success");
        }
        Reply::Json(StatusCode::OK, body)
    }
}

/// The ledger changes of one reading, in the order they apply; `None` when it concerns no row.
pub(super) fn changes(reading: Reading) -> Option<Vec<LedgerChange>> {
    let row = |change: Arc<dyn RowChange>| LedgerChange::Row(change);
    Some(match reading {
        Reading::Ignored(_) => return None,
        Reading::Payment { payment, refunds } => {
            let mut changes = vec![row(Arc::new(PaymentChange::from_payment(
                &payment, &refunds,
            )))];
            changes.extend(
                refunds
                    .into_iter()
                    .map(|refund| row(Arc::new(RefundChange(refund)))),
            );
            changes
        }
        Reading::Refund(refund) => {
            let payment = PaymentChange::from_refund(&refund);
            let mut changes = vec![row(Arc::new(RefundChange(*refund)))];
            changes.extend(payment.map(|payment| row(Arc::new(payment))));
            changes
        }
        Reading::Dispute(dispute) => {
            let payment = PaymentChange::from_dispute(&dispute);
            let mut changes = vec![row(Arc::new(DisputeChange(*dispute)))];
            changes.extend(payment.map(|payment| row(Arc::new(payment))));
            changes
        }
        Reading::Subscription(subscription) => {
            let subscription_id = subscription.subscription_id.clone();
            let report = BillingReport::Subscription(subscription);
            billing_changes(subscription_id, report)
        }
        Reading::Invoice(invoice) => {
            let subscription_id = invoice.subscription_id.clone()?;
            billing_changes(subscription_id, BillingReport::Invoice(invoice))
        }
    })
}

fn billing_changes(subscription_id: String, report: BillingReport) -> Vec<LedgerChange> {
    vec![
        LedgerChange::Row(Arc::new(SubscriptionChange {
            subscription_id: subscription_id.clone(),
            report: report.clone(),
        })),
        LedgerChange::Row(Arc::new(PlanChange {
            subscription_id,
            report,
        })),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{HeaderMap, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;
    use crate::sources::authenticate;

    const BODY: &str = r#"{"id":"evt_1","object":"event","type":"charge.succeeded","created":1700000000,"data":{"object":{"id":"ch_1"}}}"#;

    fn request(signature: &str) -> IncomingRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            "stripe-signature",
            HeaderValue::from_str(signature).expect("ascii"),
        );
        IncomingRequest {
            method: Method::POST,
            path: WEBHOOKS_ROUTE.to_owned(),
            query: None,
            headers,
            body: Bytes::from_static(BODY.as_bytes()),
            received_at: Timestamp::from_unix_seconds(1_700_000_000),
            path_params: Vec::new(),
        }
    }

    fn builtin(toml: &str, env: &[(&str, &str)]) -> SharedSource {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let section: toml::Table = toml::from_str(toml).expect("toml");
        StripeProvider
            .builtin(section, &env)
            .expect("settings")
            .expect("a built-in source")
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds)
    }

    #[test]
    fn every_secret_of_stripe_webhook_secret_is_accepted() {
        let source = builtin("", &[("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new")]);
        for secret in ["whsec_old", "whsec_new"] {
            let signature = StripeScheme::sign(secret, 1_700_000_000, BODY.as_bytes());
            let verified = authenticate(source.as_ref(), request(&signature), at(1_700_000_010))
                .expect("verified");
            let identity = source.identify(&verified).expect("identified");
            assert_eq!(identity.dedup_key, "evt_1");
            assert_eq!(identity.event_type, "charge.succeeded");
        }
        let other = StripeScheme::sign("whsec_other", 1_700_000_000, BODY.as_bytes());
        assert_eq!(
            source.authenticate(&request(&other), at(1_700_000_010)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn the_tolerance_is_300_seconds_unless_configured() {
        let signature = StripeScheme::sign("whsec_s", 1_700_000_000, BODY.as_bytes());
        let default = builtin("", &[("STRIPE_WEBHOOK_SECRET", "whsec_s")]);
        assert!(default
            .authenticate(&request(&signature), at(1_700_000_300))
            .is_ok());
        assert!(matches!(
            default.authenticate(&request(&signature), at(1_700_000_301)),
            Err(VerifyError::TimestampOutsideTolerance { .. })
        ));
        let strict = builtin("secrets = [\"whsec_s\"]\ntolerance_secs = 60", &[]);
        assert!(matches!(
            strict.authenticate(&request(&signature), at(1_700_000_061)),
            Err(VerifyError::TimestampOutsideTolerance { .. })
        ));
    }

    #[test]
    fn without_a_secret_the_source_exists_and_refuses() {
        let source = builtin("", &[]);
        assert_eq!(source.name(), "stripe");
        assert_eq!(
            source.routes(),
            [Route::post(WEBHOOKS_ROUTE), Route::post(PAYMENTS_ROUTE)]
        );
        let signature = StripeScheme::sign("whsec_s", 1_700_000_000, BODY.as_bytes());
        assert_eq!(
            source.authenticate(&request(&signature), at(1_700_000_000)),
            Err(VerifyError::NoSecretConfigured)
        );
    }

    #[test]
    fn an_unknown_setting_is_refused() {
        let section: toml::Table = toml::from_str("tolerance = 5").expect("toml");
        assert!(StripeProvider.builtin(section, &BTreeMap::new()).is_err());
    }
}
