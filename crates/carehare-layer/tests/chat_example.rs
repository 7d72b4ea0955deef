//! The websocket chat example, run for real: two servers on one broker,
//! a websocket client on each; a line typed in one room arrives in the
//! same room on the other server, and not in another room.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The example's binary, which `cargo test` builds beside the tests.
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join("chat");
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// A chat server on a free port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(example())
        .arg(port.to_string())
        .env("AMQP_URL", common::URL)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // It says where it listens once it does.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("chat on http://"), "{line:?}");
    Server { child, port }
}

async fn join(server: &Server, room: &str) -> Socket {
    let url = format!("ws://127.0.0.1:{}/ws/{room}", server.port);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next text frame, within `secs`.
async fn next_text(socket: &mut Socket, secs: u64) -> Option<String> {
    let read = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.unwrap() {
                return Some(text.to_string());
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(secs), read)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_typed_on_one_server_arrives_on_the_other() {
    common::broker();
    let room = common::unique("room");
    let elsewhere = common::unique("other-room");
    let (a, b) = (start(), start());
    let mut on_a = join(&a, &room).await;
    let mut on_b = join(&b, &room).await;
    let mut other = join(&b, &elsewhere).await;
    // A socket joins its room just after it opens: say it again until the
    // other side is in.
    let mut arrived = None;
    for i in 0..50 {
        on_a.send(Message::text(format!("hello {i}")))
            .await
            .unwrap();
        if let Some(text) = next_text(&mut on_b, 1).await {
            arrived = Some(text);
            break;
        }
    }
    let arrived = arrived.expect("nothing arrived on the other server");
    assert!(
        arrived.starts_with(&format!("[server:{}] hello ", a.port)),
        "{arrived}"
    );
    // And back, now that both are in.
    on_b.send(Message::text("hi from b")).await.unwrap();
    let mut back = None;
    while let Some(text) = next_text(&mut on_a, 10).await {
        // Its own lines come back to it too (it is in the group).
        if text.contains("hi from b") {
            back = Some(text);
            break;
        }
    }
    assert_eq!(back.unwrap(), format!("[server:{}] hi from b", b.port));
    assert_eq!(
        next_text(&mut other, 1).await,
        None,
        "another room hears nothing"
    );
}
