//! A websocket chat with rooms, one group per room, over carehare-layer.
//!
//! Run two servers against one broker and chat across them:
//!
//! ```sh
//! test-server/start.sh     # or any RabbitMQ; set AMQP_URL to point elsewhere
//! cargo run -p carehare-layer --example chat -- 3000
//! cargo run -p carehare-layer --example chat -- 3001
//! ```
//!
//! Open <http://127.0.0.1:3000/> and <http://127.0.0.1:3001/>, join the
//! same room in both, and type. Each websocket gets a channel of the
//! server's layer; joining a room is `group_add`, a message is
//! `group_send`, and each socket forwards what its channel `receive`s.
//!
//! A Django Channels server using Python's `channels_rabbitmq` on the same
//! broker (and the default `groups` exchange) could join the same rooms:
//! the messages are `{"type": "chat.message", "text": ..., "from": ...}`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use carehare_layer::{Config, Error, Layer};
use serde::{Deserialize, Serialize};

/// What travels through the layer.
#[derive(Serialize, Deserialize)]
struct ChatMessage {
    r#type: String,
    text: String,
    from: String,
}

#[derive(Clone)]
struct App {
    layer: Layer,
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|e| format!("port {p:?}: {e}"))?,
        None => 3000,
    };
    let url =
        std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
    let layer = Layer::new(Config::new(url))?;
    let app = App {
        layer: layer.clone(),
        name: format!("server:{port}"),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/ws/{room}", get(websocket))
        .with_state(app);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("chat on http://{address}/ (Ctrl-C to stop)");
    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        // Ends every socket's receive loop, so the server can stop.
        layer.close().await;
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn index() -> Html<&'static str> {
    Html(PAGE)
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    Path(room): Path<String>,
    State(app): State<App>,
) -> Response {
    upgrade
        .on_upgrade(move |socket| async move {
            match chat(socket, &app, &room).await {
                // The server is stopping.
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => eprintln!("room {room}: {e}"),
            }
        })
        .into_response()
}

/// One websocket: a channel in the room's group until it goes.
async fn chat(mut socket: WebSocket, app: &App, room: &str) -> Result<(), Error> {
    let channel = app.layer.new_channel();
    app.layer.group_add(room, &channel).await?;
    let result = relay(&mut socket, app, room, &channel).await;
    app.layer.group_discard(room, &channel).await?;
    result
}

async fn relay(socket: &mut WebSocket, app: &App, room: &str, channel: &str) -> Result<(), Error> {
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let message = ChatMessage {
                        r#type: "chat.message".into(),
                        text: text.to_string(),
                        from: app.name.clone(),
                    };
                    app.layer.group_send(room, &message).await?;
                }
                Some(Ok(_)) => {}
                // The browser went away.
                Some(Err(_)) | None => return Ok(()),
            },
            // `receive` is cancel-safe: losing the race loses no message.
            received = app.layer.receive::<ChatMessage>(channel) => {
                let message = match received {
                    Ok(m) => m,
                    Err(e @ Error::Decode { .. }) => {
                        eprintln!("ignoring a message that is not a chat message: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let line = format!("[{}] {}", message.from, message.text);
                if socket.send(Message::Text(line.into())).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>carehare-layer chat</title>
<form id="join">Room: <input id="room" value="lobby" pattern="[a-zA-Z0-9._-]{1,99}"> <button>Join</button></form>
<pre id="log" style="height: 20em; overflow: auto; border: 1px solid #ccc"></pre>
<form id="say"><input id="text" size="60" autocomplete="off"> <button>Send</button></form>
<script>
let socket = null;
const log = (line) => { const el = document.getElementById("log"); el.textContent += line + "\n"; el.scrollTop = el.scrollHeight; };
document.getElementById("join").onsubmit = (e) => {
  e.preventDefault();
  if (socket) socket.close();
  const room = document.getElementById("room").value;
  socket = new WebSocket(`ws://${location.host}/ws/${encodeURIComponent(room)}`);
  socket.onopen = () => log(`-- joined ${room}`);
  socket.onmessage = (m) => log(m.data);
  socket.onclose = () => log(`-- left ${room}`);
};
document.getElementById("say").onsubmit = (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  if (socket && socket.readyState === WebSocket.OPEN && input.value) socket.send(input.value);
  input.value = "";
};
</script>
"#;
