//! The running server's admin API, as `wharf replay` and `wharf export` reach it: `--url`, the
//! token from `WHARF_ADMIN_TOKEN`, and the API's JSON errors turned into one readable line.

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use reqwest::{Method, Response};
use secrecy::{ExposeSecret, SecretString};

/// Where the server is and how to prove we may use its admin API.
#[derive(Debug, Args)]
pub struct Connection {
    /// The running server's base URL.
    #[arg(long, env = "WHARF_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// An admin token (printed by `wharf serve` at first start, or by `wharf token create`).
    #[arg(long = "token", env = "WHARF_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub struct AdminClient {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let Some(token) = connection.token.clone().filter(|t| !t.is_empty()) else {
            bail!("no admin token: set WHARF_ADMIN_TOKEN (or pass --token)");
        };
        let http = reqwest::Client::builder()
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            base: connection.url.trim_end_matches('/').to_owned(),
            token: SecretString::from(token),
            http,
        })
    }

    /// Sends a request with `query` pairs; an answer that is not 2xx becomes an error that
    /// names the API's code and message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
    ) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose_secret())
            .query(query)
            .send()
            .await
            .map_err(|error| anyhow!("cannot reach {}: {}", self.base, error_text(&error)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("");
        bail!("the server answered {status}: {code}: {message}")
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
    ) -> anyhow::Result<serde_json::Value> {
        self.send(method, path, query)
            .await?
            .json()
            .await
            .context("the server's answer is not JSON")
    }
}

/// reqwest's error and its innermost cause ("connection refused"), on one line.
fn error_text(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if cause.to_string() == error.to_string() {
        error.to_string()
    } else {
        format!("{error}: {cause}")
    }
}

/// `Some(value)` as a query pair.
pub fn pair(name: &str, value: Option<&str>) -> Option<(String, String)> {
    value.map(|value| (name.to_owned(), value.to_owned()))
}
