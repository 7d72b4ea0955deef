//! What the local test broker says: its socket limit (management API) and
//! the connections it holds with a given name prefix (`rabbitmqctl`,
//! through the test server's `env.sh`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// `GET path` on the management API (127.0.0.1:15672, guest/guest).
fn management_get(path: &str) -> Result<Value, String> {
    let addr = "127.0.0.1:15672".parse().map_err(|e| format!("{e}"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("management API: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    // HTTP/1.0: the reply is not chunked and ends when the server closes.
    // The header is guest:guest in base64.
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:15672\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n"
    )
    .map_err(|e| format!("management API: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)
        .map_err(|e| format!("management API: {e}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or("management API: no header end")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("management API {path}: {status}"));
    }
    serde_json::from_str(body).map_err(|e| format!("management API {path}: {e}"))
}

/// How many sockets the broker allows (`sockets_total`: about 0.9 × its
/// open-file limit on RabbitMQ 3.10).
pub fn socket_limit() -> Result<u64, String> {
    let nodes = management_get("/api/nodes")?;
    nodes[0]["sockets_total"]
        .as_u64()
        .ok_or_else(|| "no sockets_total in /api/nodes".to_string())
}

/// The broker's operating-system process id (`os_pid` in the management
/// API), to read its CPU time from `/proc` when it runs on this machine.
pub fn os_pid() -> Result<u32, String> {
    let nodes = management_get("/api/nodes")?;
    nodes[0]["os_pid"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| "no os_pid in /api/nodes".to_string())
}

/// The broker's connections whose client-provided name starts with
/// `prefix`: (all of them, those in state `running`).
pub fn connections_named(test_server: &str, prefix: &str) -> Result<(usize, usize), String> {
    let out = Command::new("bash")
        .args([
            "-c",
            r#"source "$1/env.sh" && rabbitmqctl -q list_connections --no-table-headers --timeout 300 state client_properties"#,
            "bash",
            test_server,
        ])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl list_connections: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // One line per connection: its state, a tab, its client properties
    // (where `connection_name` holds the name).
    let text = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(prefix)).collect();
    let running = ours.iter().filter(|l| l.starts_with("running")).count();
    Ok((ours.len(), running))
}
