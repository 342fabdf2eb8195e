//! A Node.js script of `tests/js/` driven over its standard streams: JSON lines both ways. The
//! independent clients (`@rails/actioncable`, a headless Chromium) run this way.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct NodeScript {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeScript {
    /// Runs `tests/js/<script>` with `args`; its packages must be installed (`scripts/test`).
    pub fn start(script: &str, args: &[&str]) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/js");
        assert!(
            std::path::Path::new(dir).join("node_modules").exists(),
            "tests/js/node_modules is missing: scripts/test installs it (npm ci --prefix tests/js)"
        );
        let mut child = Command::new("node")
            .arg(format!("{dir}/{script}"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (Node.js 20 is on the machine)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { _child: child, stdin, lines }
    }

    pub async fn tell(&mut self, command: &Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The script's next line, within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Value {
        let line = tokio::time::timeout(wait, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the script said something within {wait:?}"))
            .unwrap()
            .expect("the script is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}
