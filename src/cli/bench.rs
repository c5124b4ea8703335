//! `tierlog bench`: filled in below.
use std::process::ExitCode;
use anyhow::Result;
use clap::Subcommand;
use super::GlobalArgs;
#[derive(Subcommand, Debug)]
pub enum BenchCommand { Append }
pub fn run(_global: &GlobalArgs, _cmd: BenchCommand) -> Result<ExitCode> { Ok(ExitCode::SUCCESS) }
