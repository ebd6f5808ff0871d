//! `wharf replay [filters] [--dry-run]`: puts finished deliveries back in line through the
//! running server's admin API, then follows the processor until they are attempted again.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use super::admin_client::{pair, AdminClient, Connection};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  wharf replay --source cartpanda --status dead --dry-run   # how many would be replayed
  wharf replay --source cartpanda --status dead             # replay them
  wharf replay --id 4711                                    # one delivery")]
pub struct ReplayArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this delivery (repeatable); other filters are then ignored.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<i64>,
    #[arg(long)]
    source: Option<String>,
    /// processed, ignored, failed, dead or rejected.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    event_type: Option<String>,
    /// At most this many, oldest first.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Only count what would be replayed.
    #[arg(long)]
    dry_run: bool,
    /// Return once the server accepted the replay, without following the processor.
    #[arg(long)]
    no_wait: bool,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.connection)?;
    if !args.ids.is_empty() {
        for id in &args.ids {
            client
                .send(Method::POST, &format!("/api/deliveries/{id}/replay"), &[])
                .await?;
            println!("delivery {id}: replayed");
        }
        return follow(&client, args.ids.len() as u64, args.no_wait).await;
    }
    let mut query: Vec<(String, String)> = [
        pair("source", args.source.as_deref()),
        pair("status", args.status.as_deref()),
        pair("event_type", args.event_type.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    query.push(("limit".into(), args.limit.to_string()));
    if args.dry_run {
        query.push(("dry_run".into(), "true".into()));
    }
    let answer = client
        .json(Method::POST, "/api/deliveries/replay", &query)
        .await?;
    let matched = answer["matched"].as_u64().unwrap_or(0);
    if args.dry_run {
        println!("{matched} deliveries would be replayed");
        return Ok(());
    }
    println!("{matched} deliveries replayed");
    follow(&client, matched, args.no_wait).await
}

/// A progress bar over the processor's backlog until it has attempted `replayed` deliveries
/// (the backlog may hold others: the bar then finishes when everything due is done).
async fn follow(client: &AdminClient, replayed: u64, no_wait: bool) -> anyhow::Result<()> {
    if no_wait || replayed == 0 {
        return Ok(());
    }
    let bar = ProgressBar::new(replayed);
    if let Ok(style) = ProgressStyle::with_template("processing [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    loop {
        let stats = client.json(Method::GET, "/api/stats", &[]).await?;
        let due = stats["backlog"]["due"].as_u64().unwrap_or(0);
        bar.set_position(replayed.saturating_sub(due));
        if due == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish();
    println!("done: the replayed deliveries were attempted again");
    Ok(())
}
