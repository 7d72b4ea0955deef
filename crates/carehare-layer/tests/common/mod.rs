//! Helpers shared by the live-broker tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use carehare_layer::{Config, Layer};

/// The test broker, `test-server/start.sh`'s.
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672";

/// Starts (or reuses) the test broker, once per test binary.
pub fn broker() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-server/start.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .output()
            .expect("run test-server/start.sh");
        assert!(
            out.status.success(),
            "test-server/start.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A config for the test broker.
pub fn config() -> Config {
    broker();
    Config::new(URL)
}

/// A layer on the test broker, connected.
pub async fn layer() -> Layer {
    connected(Layer::new(config()).unwrap()).await
}

/// Waits (bounded) until `layer` is connected.
pub async fn connected(layer: Layer) -> Layer {
    within(20, layer.connection()).await.unwrap();
    layer
}

/// `future`, or a panic after `secs` seconds.
pub async fn within<F: Future>(secs: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("no result within {secs} s"))
}

/// A name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{prefix}-{:016x}", h.finish())
}

/// The chat message the tests pass around.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Chat {
    pub r#type: String,
    pub text: String,
}

pub fn chat(text: impl Into<String>) -> Chat {
    Chat {
        r#type: "chat.message".into(),
        text: text.into(),
    }
}

/// Receives one chat message on `channel`, within `secs` seconds.
pub async fn recv(layer: &Layer, channel: &str, secs: u64) -> Chat {
    within(secs, layer.receive::<Chat>(channel)).await.unwrap()
}

/// Asserts nothing arrives on `channel` for `millis` milliseconds.
pub async fn nothing(layer: &Layer, channel: &str, millis: u64) {
    if let Ok(got) = tokio::time::timeout(
        Duration::from_millis(millis),
        layer.receive::<Chat>(channel),
    )
    .await
    {
        panic!("expected nothing on {channel}, got {got:?}");
    }
}
