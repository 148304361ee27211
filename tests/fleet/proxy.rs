//! A TCP proxy between one replica and Redis that a test can cut: a network partition as a
//! replica sees it. Cut, it forwards nothing and answers nothing (connections stay open and
//! hang, new ones are accepted and hang too), as a dropped route or a stopped switch would;
//! restored, the hung connections are closed and new ones are forwarded again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    /// Bumped at every cut and every restore: connections made before end their forwarding.
    epoch: watch::Sender<u64>,
}

impl Proxy {
    /// A proxy on a free loopback port to the Redis at `target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let (accept_open, accept_epoch) = (Arc::clone(&open), epoch.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut changed = accept_epoch.subscribe();
                if !accept_open.load(Ordering::SeqCst) {
                    // Partitioned: hold the connection, say nothing, until the next restore.
                    tokio::spawn(async move {
                        let _ = changed.changed().await;
                        drop(inbound);
                    });
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {
                            // Cut: stop forwarding but keep both ends open (a hang), until
                            // the restore closes them.
                            let _ = changed.changed().await;
                        }
                    }
                });
            }
        });
        Proxy { port, open, epoch }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Partition: nothing goes through from now on.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Heal: hung connections close, new ones go through.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }
}
