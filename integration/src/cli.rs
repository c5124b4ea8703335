//! Running the real `tierlog` binary against an [`S3Target`]: a configuration file, a child
//! process that sees only this test's settings and credentials, its JSON lines.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{S3Target, tierlog_bin};

/// A configuration in `dir` (data under `dir/data`) for the bucket prefix `prefix`: small
/// segments and chunks, no fsync, no local retention of tiered segments.
pub fn write_config(dir: &Path, s3: &S3Target, prefix: &str) -> std::path::PathBuf {
    let path = dir.join("tierlog.toml");
    let text = format!(
        "data_dir = \"{data}\"\n[segment]\nmax_bytes = 65536\n[durability]\nfsync = \"never\"\n\
         [remote]\nurl = \"s3://{bucket}/{prefix}\"\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\nallow_http = true\n\
         [tiering]\nlocal_retention_bytes = 0\nchunk_bytes = 65536\nupload_concurrency = 2\n",
        data = dir.join("data").display(),
        bucket = s3.bucket,
        endpoint = s3.endpoint,
        region = s3.region,
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn tierlog(config: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(tierlog_bin());
    cmd.arg("--config").arg(config);
    // The child sees only this test's configuration: no TIERLOG_* (the test harness's own
    // TIERLOG_TEST_* would be rejected as unknown keys) and no ambient AWS credentials.
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_") || k.starts_with("AWS_")) {
        cmd.env_remove(var);
    }
    // Never let the credential chain reach for the EC2 metadata endpoint from a test.
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

pub fn run(config: &Path, env: &[(String, String)], args: &[&str], stdin: &str) -> Output {
    run_command(tierlog(config, env).args(args), stdin)
}

/// Runs `cmd` with `stdin` as its whole input and collects its output.
pub fn run_command(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
