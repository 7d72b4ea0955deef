//! A TCP forwarder that can be severed: every connection through it is
//! closed, with an RST or a FIN (both sides), and it stops listening until
//! reopened on the same port. A link cut, as the client sees it: the
//! socket dies and reconnecting is refused until the path is back.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// Bumped on each cut, with whether to reset: connections of an older
    /// generation close.
    generation: watch::Sender<(u64, bool)>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (generation, _) = watch::channel((0, false));
        let proxy = Self {
            addr,
            upstream,
            generation,
            accept: Mutex::new(None),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&self, listener: TcpListener) {
        let cut = self.generation.subscribe();
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, cut.clone()));
            }
        });
        *self.accept.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops listening and resets every connection.
    pub async fn sever(&self, reset: bool) {
        let task = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            // Returns once the task, and so the listener, is dropped.
            let _ = task.await;
        }
        self.generation.send_modify(|g| *g = (g.0 + 1, reset));
    }

    /// Listens again, on the same port.
    pub async fn reopen(&self) -> io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<(u64, bool)>,
) {
    let _ = client.set_nodelay(true);
    let mut server = tokio::select! {
        s = TcpStream::connect(upstream) => match s {
            Ok(s) => s,
            Err(_) => return,
        },
        _ = cut.changed() => {
            if cut.borrow().1 {
                let _ = client.set_zero_linger();
            }
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let severed = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = cut.changed() => true,
    };
    if severed && cut.borrow().1 {
        // Dropped with SO_LINGER 0: an RST each way, not a FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}
