//! Debian's Chromium, headless, driven through Parley's pages by `tests/js/dashboard_check.mjs`
//! (puppeteer-core over the DevTools protocol).

use std::time::Duration;

use serde_json::{json, Value};

use crate::node::NodeScript;

pub struct Browser(NodeScript);

impl Browser {
    /// A browser for the server at `base` (`http://127.0.0.1:PORT`).
    pub async fn start(base: &str) -> Self {
        let mut script = NodeScript::start("dashboard_check.mjs", &[base]);
        let ready = script.next_within(Duration::from_secs(60)).await;
        assert_eq!(ready["ready"], true, "chromium started: {ready}");
        Self(script)
    }

    /// Runs `command` (`{"op": ...}`) and returns its answer; panics when it failed.
    pub async fn run(&mut self, command: Value) -> Value {
        let answer = self.try_run(command.clone()).await;
        assert_eq!(answer["ok"], true, "{command}: {answer}");
        answer
    }

    /// Runs `command` and returns its answer, failed or not.
    pub async fn try_run(&mut self, command: Value) -> Value {
        self.0.tell(&command).await;
        self.0.next_within(Duration::from_secs(30)).await
    }

    pub async fn open(&mut self, path: &str) {
        self.run(json!({"op": "open", "path": path})).await;
    }
}
