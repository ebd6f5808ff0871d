//! `wharf export [filters] --format csv|jsonl --out FILE`: streams a list from the running
//! server's admin API into a file, a chunk at a time, with a progress bar of rows written.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use tokio::io::AsyncWriteExt as _;

use super::admin_client::{pair, AdminClient, Connection};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  wharf export --format csv --out deliveries.csv --source stripe --since 2024-01-01T00:00:00Z
  wharf export --table sales --filter status=approved --format jsonl --out sales.jsonl")]
pub struct ExportArgs {
    #[command(flatten)]
    connection: Connection,
    /// A ledger table (see GET /api/ledger); without it, the deliveries.
    #[arg(long)]
    table: Option<String>,
    #[arg(long, value_enum)]
    format: ExportFormat,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    source: Option<String>,
    /// Deliveries: their status.
    #[arg(long)]
    status: Option<String>,
    /// Deliveries: their event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Deliveries received at or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Deliveries received before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Text in the body (deliveries) or in any text column (ledger).
    #[arg(long)]
    q: Option<String>,
    /// A ledger column's value, COLUMN=VALUE (repeatable).
    #[arg(long = "filter", value_name = "COLUMN=VALUE")]
    filters: Vec<String>,
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.connection)?;
    let (path, query) = request(&args)?;
    let mut response = client.send(Method::GET, &path, &query).await?;
    let mut file = tokio::fs::File::create(&args.out)
        .await
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} rows, {bytes} ({elapsed})") {
        bar.set_style(style);
    }
    let mut lines = 0u64;
    let mut bytes = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the server stopped sending the export")?
    {
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        bytes += chunk.len() as u64;
        bar.set_position(lines);
        bar.set_message(bytes.to_string());
    }
    file.flush().await?;
    bar.finish_and_clear();
    let rows = match args.format {
        ExportFormat::Csv => lines.saturating_sub(1),
        ExportFormat::Jsonl => lines,
    };
    println!(
        "{rows} rows ({bytes} bytes) written to {}",
        args.out.display()
    );
    Ok(())
}

/// The path and query of the export this command asks for.
fn request(args: &ExportArgs) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let format = match args.format {
        ExportFormat::Csv => "csv",
        ExportFormat::Jsonl => "jsonl",
    };
    let mut query: Vec<(String, String)> = vec![("format".into(), format.into())];
    query.extend(pair("source", args.source.as_deref()));
    query.extend(pair("q", args.q.as_deref()));
    let Some(table) = &args.table else {
        if !args.filters.is_empty() {
            bail!("--filter is for ledger tables: add --table NAME");
        }
        query.extend(pair("status", args.status.as_deref()));
        query.extend(pair("event_type", args.event_type.as_deref()));
        query.extend(pair("since", args.since.as_deref()));
        query.extend(pair("until", args.until.as_deref()));
        return Ok(("/api/deliveries".into(), query));
    };
    if args.status.is_some() || args.event_type.is_some() || args.since.is_some() {
        bail!("--status, --event-type, --since and --until are for deliveries; for a ledger table use --filter COLUMN=VALUE");
    }
    for filter in &args.filters {
        let Some((column, value)) = filter.split_once('=') else {
            bail!("--filter {filter:?}: write COLUMN=VALUE");
        };
        query.push((column.to_owned(), value.to_owned()));
    }
    Ok((format!("/api/ledger/{table}"), query))
}
