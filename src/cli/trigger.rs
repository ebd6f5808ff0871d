//! `wharf trigger <source> <event>`: posts a signed sample of a provider's event to a running
//! Wharf (as `stripe trigger` does), built and signed by the source itself
//! ([`crate::sources::Source::sample`]) from the same configuration the server reads.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

use anyhow::Context as _;

use crate::clock::{Clock as _, SystemClock};
use crate::config::Config;
use crate::sources::{SampleError, SampleRequest};

/// Lists every source with the events it can sample.
pub fn list(config: &Config) {
    for source in config.sources.iter() {
        let events = source.sample_events();
        let note = if events.is_empty() {
            match source.sample("", SystemClock.now()) {
                Err(SampleError::Unsupported(reason)) => format!("(no samples: {reason})"),
                _ => "(no samples)".to_owned(),
            }
        } else {
            events.join(", ")
        };
        let secret = if source.secret_configured() {
            ""
        } else {
            "  [no secret configured: cannot sign]"
        };
        println!("{:<12} {note}{secret}", source.name());
    }
}

/// Builds, signs and posts one sample; fails unless the server answers 2xx.
pub async fn send(
    config: &Config,
    source_name: &str,
    event: &str,
    url: Option<&str>,
) -> anyhow::Result<()> {
    let source = config.sources.get(source_name).with_context(|| {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
        format!(
            "no source named {source_name:?} (sources: {})",
            names.join(", ")
        )
    })?;
    let sample = source.sample(event, SystemClock.now())?;
    let base = url.map_or_else(|| local_base(config.listen), |url| url.to_owned());
    let target = format!("{}{}", base.trim_end_matches('/'), sample.path_and_query);
    let (status, body) = post(&target, sample).await?;
    println!("{} {event}: {target} -> {status}", source.name());
    if !body.is_empty() {
        println!("{body}");
    }
    anyhow::ensure!(
        status.is_success(),
        "the server answered {status}: the sample was not accepted"
    );
    Ok(())
}

/// Where a server with this `listen` is reached from this machine.
fn local_base(listen: SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let host = if listen.is_ipv6() && !listen.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    format!("http://{host}:{}", listen.port())
}

async fn post(
    target: &str,
    sample: SampleRequest,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let client = reqwest::Client::builder()
        .build()
        .context("cannot build an HTTP client")?;
    let method = reqwest::Method::from_bytes(sample.method.as_str().as_bytes())
        .context("the sample's method")?;
    let mut request = client.request(method, target).body(sample.body.to_vec());
    for (name, value) in &sample.headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {target}; is wharf serve running?"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}
