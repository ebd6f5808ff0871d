//! What Wharf says about a configuration, at start-up and in `wharf config check`: where the
//! data goes, which file was read, each source with its routes and whether it can accept
//! traffic, and settings that are meant for nothing. It names secrets' variables, never their
//! values.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{source_secret_variable, Config, Environment};
use crate::sources::Source;

/// One source as an operator needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    pub name: String,
    pub kind: &'static str,
    /// `METHOD /path`, the source's own routes then `/in/{name}`.
    pub routes: Vec<String>,
    pub secret_configured: bool,
}

/// A configuration, described.
#[derive(Debug, Clone)]
pub struct ConfigSummary {
    pub listen: SocketAddr,
    /// Absolute SQLite path or PostgreSQL URL without its password.
    pub database: String,
    /// The absolute path of the file read, `None` when the environment alone configured Wharf.
    pub config_file: Option<PathBuf>,
    pub sources: Vec<SourceSummary>,
    /// Settings that configure nothing (a secret for a source that does not exist).
    pub warnings: Vec<String>,
}

impl ConfigSummary {
    pub fn new(config: &Config, config_file: Option<&Path>, env: &dyn Environment) -> Self {
        Self {
            listen: config.listen,
            database: config.database.shown(),
            config_file: config_file
                .map(|path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned())),
            sources: config
                .sources
                .iter()
                .map(|s| describe(s.as_ref()))
                .collect(),
            warnings: orphan_secrets(config, env),
        }
    }

    /// Sources that refuse all traffic for want of a secret.
    pub fn missing_secrets(&self) -> impl Iterator<Item = &SourceSummary> {
        self.sources.iter().filter(|s| !s.secret_configured)
    }

    /// The readable block: one line per fact, sources aligned.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let config = match &self.config_file {
            Some(path) => path.display().to_string(),
            None => "none, environment only".to_owned(),
        };
        let _ = writeln!(out, "  listen    {}", self.listen);
        let _ = writeln!(out, "  database  {}", self.database);
        let _ = writeln!(out, "  config    {config}");
        let _ = writeln!(out, "  sources");
        let width = self.sources.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for source in &self.sources {
            let state = if source.secret_configured {
                "secret configured"
            } else {
                "MISSING: refusing traffic"
            };
            let _ = writeln!(out, "    {:width$}  {state} ({})", source.name, source.kind);
            let _ = writeln!(out, "    {:width$}  {}", "", source.routes.join(", "));
        }
        out.truncate(out.trim_end().len());
        out
    }
}

fn describe(source: &dyn Source) -> SourceSummary {
    let own = source.routes();
    let mut routes: Vec<String> = own
        .iter()
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    // `/in/{name}` takes POST and whatever methods the source's own routes use.
    let mut methods = vec!["POST".to_owned()];
    for route in &own {
        let method = route.method.to_string();
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    for method in methods {
        routes.push(format!("{method} /in/{}", source.name()));
    }
    SourceSummary {
        name: source.name().to_owned(),
        kind: source.kind(),
        routes,
        secret_configured: source.secret_configured(),
    }
}

/// `WHARF_SOURCE_<NAME>_SECRET` set for a name no source has: a typo, or a source removed from
/// the config while its secret stayed in the environment.
fn orphan_secrets(config: &Config, env: &dyn Environment) -> Vec<String> {
    let expected: Vec<String> = config
        .sources
        .iter()
        .map(|source| source_secret_variable(source.name()))
        .collect();
    let mut names = env.names();
    names.sort();
    names
        .into_iter()
        .filter(|name| name.starts_with("WHARF_SOURCE_") && name.ends_with("_SECRET"))
        .filter(|name| !expected.contains(name))
        .map(|name| {
            let source = name
                .trim_start_matches("WHARF_SOURCE_")
                .trim_end_matches("_SECRET")
                .to_ascii_lowercase();
            format!(
                "{name} is set but no source {source:?} is configured, so it is unused \
                 (declare [sources.{source}] with its kind, or unset it)"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn summary_names_each_source_its_routes_and_whether_it_can_accept_traffic() {
        let env = env(&[("CARTPANDA_WEBHOOK_SECRET", "very-secret-value")]);
        let config = Config::from_toml("", &env).expect("config");
        let summary = ConfigSummary::new(&config, None, &env);
        let text = summary.render();
        assert!(!text.contains("very-secret-value"), "{text}");
        assert!(text.contains("config    none, environment only"), "{text}");
        let cartpanda = text
            .lines()
            .position(|line| line.trim_start().starts_with("cartpanda "))
            .expect("cartpanda listed");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[cartpanda].contains("secret configured"), "{text}");
        assert!(
            lines[cartpanda + 1].contains("POST /webhook/cartpanda, POST /in/cartpanda"),
            "{text}"
        );
        let stripe = lines
            .iter()
            .find(|line| line.trim_start().starts_with("stripe "))
            .expect("stripe listed");
        assert!(stripe.contains("MISSING: refusing traffic"), "{text}");
        assert!(summary.warnings.is_empty());
    }

    #[test]
    fn a_secret_for_a_source_that_does_not_exist_is_warned_about() {
        let env = env(&[
            ("WHARF_SOURCE_BILLING_SECRET", "whsec_aGVsbG8="),
            ("WHARF_SOURCE_BILING_SECRET", "whsec_aGVsbG8="),
        ]);
        let config = Config::from_toml("[sources.billing]\nkind = \"standard-webhooks\"", &env)
            .expect("config");
        let summary = ConfigSummary::new(&config, None, &env);
        assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
        assert!(summary.warnings[0].starts_with("WHARF_SOURCE_BILING_SECRET is set"));
        assert!(!summary.warnings[0].contains("aGVsbG8"));
    }
}
