//! `tierlog demo`: filled in below.
use std::process::ExitCode;
use anyhow::Result;
use clap::Args;
use super::GlobalArgs;
#[derive(Args, Debug)]
pub struct DemoArgs {}
pub fn run(_global: &GlobalArgs, _args: DemoArgs) -> Result<ExitCode> { Ok(ExitCode::SUCCESS) }
