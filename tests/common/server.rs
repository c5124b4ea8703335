//! `tierlog serve` as a real process on an ephemeral loopback port, for tests that talk to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::BIN;

/// A running `tierlog serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Starts `tierlog serve` on an ephemeral loopback port and waits until it listens.
    pub fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        Server::spawn(Command::new(BIN), data_dir, extra_env)
    }

    /// A server under `ulimit -f` (512-byte blocks) with SIGXFSZ ignored: a write past the
    /// limit fails with EFBIG, a real I/O error on the append path that needs no root.
    pub fn start_with_file_size_limit(data_dir: &Path, blocks: u32) -> Server {
        let script = format!("ulimit -f {blocks} && trap '' XFSZ && exec \"$0\" \"$@\"");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, BIN]);
        Server::spawn(cmd, data_dir, &[])
    }

    pub fn spawn(mut cmd: Command, data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        cmd.arg("--data-dir").arg(data_dir).args(["serve", "--listen", "127.0.0.1:0"]);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
            cmd.env_remove(k);
        }
        cmd.env("TIERLOG_TIERING_ENABLED", "false").envs(extra_env.iter().copied());
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        // Owned by `Server` from here on, whose Drop kills and waits for it.
        let mut server = Server { child, base: String::new() };
        let mut line = String::new();
        while server.base.is_empty() {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
            if let Some(url) = super::announced(&line, "http") {
                server.base = url.to_string();
            }
        }
        std::thread::spawn(move || for _ in stderr.lines() {}); // keep draining its stderr
        server
    }

    /// A server with tiering to a local-directory remote: data in `dir/data`, objects in
    /// `dir/remote`.
    pub fn start_tiered(dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        let remote = format!("file://{}", dir.join("remote").display());
        let mut env = vec![("TIERLOG_TIERING_ENABLED", "true"), ("TIERLOG_REMOTE_URL", remote.as_str())];
        env.extend_from_slice(extra_env);
        Server::start(&dir.join("data"), &env)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn signal(&mut self, signal: &str) {
        Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
