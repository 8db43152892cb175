//! `gpuwarden bench …`: measurements that go into docs/benchmarks.md.

use crate::cli::BenchIngestArgs;
use anyhow::Result;
use std::process::ExitCode;

pub fn ingest(_args: BenchIngestArgs) -> Result<ExitCode> {
    anyhow::bail!("bench ingest is being written")
}
