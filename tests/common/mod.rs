//! Helpers shared by the test files (most run the real `tierlog` binary).
#![allow(dead_code)] // each test file uses its own subset

pub mod server;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tierlog");

/// Runs `cmd` with `stdin` as its whole standard input and collects its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Standard output parsed as one JSON value per line.
pub fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A log writer that keeps what it is given, for tests that read the log lines a subscriber wrote.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of `field` on a start line of `tierlog serve` (text log format:
/// `… INFO tierlog::lifecycle: tierlog serving data_dir=… http=http://127.0.0.1:…`).
pub fn announced(line: &str, field: &str) -> Option<String> {
    line.split_whitespace().find_map(|word| word.strip_prefix(field)?.strip_prefix('=')).map(str::to_string)
}
