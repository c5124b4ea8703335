//! `tierlog decrypt`: an encrypted segment object (downloaded from the bucket) back to the
//! segment bytes, as `zstd -d` does for objects stored in clear (docs/AUDIT.md).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tierlog_tiering::encryption::Keyring;
use tierlog_tiering::segment_object;

use super::GlobalArgs;

/// Largest object read: a segment object of the largest segment (2 GiB) plus zstd's overhead.
const OBJECT_BYTES_MAX: u64 = 3 * 1024 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The segment object, downloaded from the bucket (`-`: standard input).
    pub object: PathBuf,
    /// The topic and partition of the object (its key names them:
    /// `segments/<hash>/<topic>/<partition>/…`): they are part of each chunk's authenticated data.
    #[arg(long)]
    pub topic: String,
    #[arg(long, value_name = "N")]
    pub partition: u32,
    /// Keyring file holding the object's key [default: the configuration's `[encryption]`].
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Write the segment here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: DecryptArgs) -> Result<ExitCode> {
    // Before any key is loaded or byte read: a pasted object key or a script bug in --topic
    // is a usage error, named as such.
    tierlog::topic::validate_name(&args.topic).context("--topic")?;
    let keyring = match &args.key_file {
        Some(path) => Some(Keyring::from_file(path)?),
        None => tierlog::tier::load_keyring(&global.load_config()?)?.map(|k| (*k).clone()),
    };
    let mut object = Vec::new();
    let what = args.object.display().to_string();
    if what == "-" {
        std::io::stdin().take(OBJECT_BYTES_MAX).read_to_end(&mut object).context("reading standard input")?;
    } else {
        std::fs::File::open(&args.object)
            .and_then(|f| f.take(OBJECT_BYTES_MAX).read_to_end(&mut object))
            .with_context(|| format!("reading {what}"))?;
    }
    let raw = segment_object::decode_object_with(&object, keyring.as_ref(), &args.topic, args.partition)
        .with_context(|| format!("{what} ({}/{})", args.topic, args.partition))?;
    match &args.output {
        Some(path) => std::fs::write(path, &raw).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().lock().write_all(&raw).context("writing standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
