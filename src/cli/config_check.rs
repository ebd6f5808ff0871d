//! `wharf config check`: loads the configuration exactly as `wharf serve` would and says what
//! it would do: the database, the file read, each source's URLs and whether its secret is set,
//! and settings meant for nothing. Invalid configuration, or a source declared under
//! `[sources.NAME]` without its secret, is an error (exit 1); a built-in source without a
//! secret is only reported, since most installs use a few providers.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

use super::summary::ConfigSummary;
use crate::sources::PROVIDERS;

/// Prints the report; the error names the sources that cannot work.
pub fn report(summary: &ConfigSummary) -> anyhow::Result<()> {
    println!("{}", summary.render());
    println!();
    println!("URLs to give each provider:");
    let base = url_base(summary.listen);
    for source in &summary.sources {
        let state = if source.secret_configured {
            "secret present"
        } else {
            "secret MISSING"
        };
        println!("  {} ({state})", source.name);
        for route in &source.routes {
            let (method, path) = route.split_once(' ').unwrap_or(("POST", route));
            println!("    {method:<4} {base}{path}");
        }
    }
    for warning in &summary.warnings {
        println!("warning: {warning}");
    }
    let declared_without_secret: Vec<&str> = summary
        .missing_secrets()
        .filter(|source| !PROVIDERS.iter().any(|p| p.kind() == source.name))
        .map(|source| source.name.as_str())
        .collect();
    anyhow::ensure!(
        declared_without_secret.is_empty(),
        "declared source(s) without a secret, refusing all traffic: {} (set \
         WHARF_SOURCE_<NAME>_SECRET or secrets = [...] in the section)",
        declared_without_secret.join(", ")
    );
    let missing = summary.missing_secrets().count();
    println!(
        "configuration OK: {} sources, {} without a secret (refusing traffic)",
        summary.sources.len(),
        missing
    );
    Ok(())
}

fn url_base(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("http://<this host>:{}", listen.port())
    } else {
        format!("http://{listen}")
    }
}
