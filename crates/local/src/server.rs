//! A service served in the background of the current runtime, for tests.

use std::net::SocketAddr;

use axum::Router;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A proxy serving in the background; stops when dropped or on [`Running::stop`].
pub struct Running<T> {
    addr: SocketAddr,
    service: T,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl<T> Running<T> {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: the value for an `AWS_ENDPOINT_URL_*` variable or an SDK `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The served proxy, to steer and inspect it in-process.
    pub fn service(&self) -> &T {
        &self.service
    }

    /// Stops accepting connections and waits for open ones to finish.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (port 0 picks a free port) and serves `router` in a background task.
pub(crate) async fn spawn<T>(
    service: T,
    router: Router,
    addr: impl ToSocketAddrs,
) -> std::io::Result<Running<T>> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Running {
        addr,
        service,
        shutdown: Some(tx),
        task,
    })
}
