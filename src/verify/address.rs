//! "Only from the provider's published addresses", for providers that publish them (TradingView,
//! Paystack). The ingress does not see the peer address, and behind a load balancer the peer is
//! the balancer anyway, so the address is the one a trusted proxy reports in a header it
//! overwrites or appends to. Pure: a header value in, a verdict out.

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::VerifyError;

/// The addresses a provider sends from, as reported by a trusted proxy's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedAllowlist {
    /// Lower-case header name, e.g. `x-forwarded-for`.
    header: String,
    addresses: Vec<IpAddr>,
}

impl ProxiedAllowlist {
    pub fn new(header: &str, addresses: Vec<IpAddr>) -> Self {
        Self {
            header: header.trim().to_ascii_lowercase(),
            addresses,
        }
    }

    /// Parses `addresses` (the provider's published ones when `None`), naming a bad entry.
    pub fn parse(
        header: &str,
        addresses: Option<&[String]>,
        published: &[&str],
    ) -> Result<Self, String> {
        let entries: Vec<String> = match addresses {
            Some(addresses) => addresses.to_vec(),
            None => published.iter().map(|a| (*a).to_owned()).collect(),
        };
        let addresses = entries
            .iter()
            .map(|entry| {
                entry
                    .trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{entry:?} is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(header, addresses))
    }

    /// Admits a request whose header's last entry (the one the proxy appended; what a sender
    /// wrote before it counts for nothing) is an allowed address.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), VerifyError> {
        let reported = headers
            .get(self.header.as_str())
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .map(str::trim)
            .unwrap_or_default();
        match reported.parse::<IpAddr>() {
            Ok(address) if self.addresses.contains(&address) => Ok(()),
            _ => Err(VerifyError::AddressNotAllowed(if reported.is_empty() {
                "(none reported)".to_owned()
            } else {
                reported.chars().take(64).collect()
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(value) = value {
            map.insert(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn only_the_address_the_proxy_appended_counts() {
        let list =
            ProxiedAllowlist::parse("X-Forwarded-For", None, &["52.31.139.75"]).expect("valid");
        assert_eq!(list.check(&headers(Some("52.31.139.75"))), Ok(()));
        assert_eq!(list.check(&headers(Some("10.0.0.1, 52.31.139.75"))), Ok(()));
        assert_eq!(
            list.check(&headers(Some("52.31.139.75, 203.0.113.9"))),
            Err(VerifyError::AddressNotAllowed("203.0.113.9".into()))
        );
        assert_eq!(
            list.check(&headers(None)),
            Err(VerifyError::AddressNotAllowed("(none reported)".into()))
        );
        assert!(ProxiedAllowlist::parse("h", Some(&["nope".to_owned()]), &[]).is_err());
    }
}
