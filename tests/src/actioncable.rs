//! A real `@rails/actioncable` consumer, run by Node.js (`tests/js/actioncable_client.mjs`) and
//! driven over its standard streams: the independent client of the Action Cable dialect.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct CableClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl CableClient {
    /// A consumer of `url` (`ws://.../api/v1/cable?token=...`); it connects with its first
    /// subscription, as Action Cable's consumers do.
    pub async fn start(url: &str) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/js");
        assert!(
            std::path::Path::new(dir).join("node_modules/@rails/actioncable").exists(),
            "tests/js/node_modules is missing: scripts/test installs it (npm ci --prefix tests/js)"
        );
        let mut child = Command::new("node")
            .arg(format!("{dir}/actioncable_client.mjs"))
            .arg(url)
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

    async fn tell(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Subscribes as `subscriptions.create(params, ...)` does; `name` labels what it observes.
    pub async fn subscribe(&mut self, name: &str, params: Value) {
        self.tell(json!({"op": "subscribe", "name": name, "params": params})).await;
    }

    /// `subscription.perform(action, data)`.
    pub async fn perform(&mut self, name: &str, action: &str, data: Value) {
        self.tell(json!({"op": "perform", "name": name, "action": action, "data": data})).await;
    }

    /// Asks for the consumer's state (answered with an observation `{"event":"state",...}`).
    pub async fn ask_state(&mut self) {
        self.tell(json!({"op": "state"})).await;
    }

    /// The next observation: `{"event": "connected"|"rejected"|"received"|"closed"|..., ...}`.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(15), self.lines.next_line())
            .await
            .expect("the consumer observed something within 15 s")
            .unwrap()
            .expect("the consumer is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The next observation that satisfies `wanted`, skipping others.
    pub async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let observed = self.next().await;
            if wanted(&observed) {
                return observed;
            }
        }
    }

    /// The next `received` data of subscription `name` whose `type` is `kind`.
    pub async fn received(&mut self, name: &str, kind: &str) -> Value {
        let observed =
            self.until(|o| o["event"] == "received" && o["name"] == name && o["data"]["type"] == kind).await;
        observed["data"].clone()
    }
}
