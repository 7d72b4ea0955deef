//! The fault proxy (`carehare_tests::proxy`) in a child process of its
//! own, so its threads and buffers do not count in the client's figures.
//! `soak proxy --upstream ADDR` prints its port, then obeys one command a
//! line on stdin (`cut`, `reset`, `hole`, `pass`), answering `ok`; it
//! ends when stdin closes.

use std::io::{BufRead, Write};
use std::process::Stdio;

use carehare_tests::proxy::{Mode, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The child's side.
pub fn serve(upstream: &str) -> Result<(), String> {
    let proxy = Proxy::start(upstream).map_err(|e| format!("proxy: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", proxy.port()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        match line.trim() {
            "cut" => proxy.cut(),
            "reset" => proxy.reset(),
            "hole" => proxy.set_mode(Mode::BlackHole),
            "pass" => proxy.set_mode(Mode::Pass),
            other => return Err(format!("unknown proxy command {other:?}")),
        }
        writeln!(out, "ok").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The parent's handle on the child.
pub struct ProxyProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl ProxyProcess {
    pub async fn start(upstream: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["proxy", "--upstream", upstream])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("proxy process: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let port = line
            .trim()
            .parse()
            .map_err(|_| format!("proxy said {line:?}, not a port"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one command and waits for its `ok`.
    pub async fn command(&mut self, command: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.stdin.flush().await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if line.trim() == "ok" {
            Ok(())
        } else {
            Err(format!("proxy answered {line:?} to {command}"))
        }
    }

    pub async fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait().await;
    }
}
