//! A real `@rails/actioncable` consumer, run by Node.js (`tests/js/actioncable_client.mjs`) and
//! driven over its standard streams: the independent client of the Action Cable dialect.

use std::time::Duration;

use serde_json::{json, Value};

use crate::node::NodeScript;

pub struct CableClient(NodeScript);

impl CableClient {
    /// A consumer of `url` (`ws://.../api/v1/cable?token=...`); it connects with its first
    /// subscription, as Action Cable's consumers do.
    pub async fn start(url: &str) -> Self {
        Self(NodeScript::start("actioncable_client.mjs", &[url]))
    }

    async fn tell(&mut self, command: Value) {
        self.0.tell(&command).await;
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
        self.0.next_within(Duration::from_secs(15)).await
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
