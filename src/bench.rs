//! Placeholder until the benchmark module lands.
use std::path::PathBuf;
use std::time::Duration;
pub struct BenchOptions {
    pub wharf_bin: PathBuf,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub body_bytes: usize,
}
pub struct BenchReport;
impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("")
    }
}
pub async fn run(_opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::bail!("not yet")
}
pub async fn serve_floor(_l: tokio::net::TcpListener, _s: String) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
