//! Serving the proxies: in the foreground until a shutdown signal ([`Proxy::serve`]), or in the
//! background of the current runtime, for tests ([`Proxy::spawn`]).

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
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

/// The future that tells a spawned server to shut down.
pub(crate) type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl<T> Running<T> {
    /// Runs `serve` on `listener` in a background task, with a shutdown future that completes
    /// on [`Running::stop`] or drop.
    pub(crate) fn spawn<F, Fut>(
        service: T,
        listener: TcpListener,
        serve: F,
    ) -> std::io::Result<Running<T>>
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Box::pin(async move {
                let _ = rx.await;
            }),
        ));
        Ok(Running {
            addr,
            service,
            shutdown: Some(tx),
            task,
        })
    }

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

/// A proxy served over HTTP: its routes, and what the start-up log line names.
pub trait Proxy: Clone + Send + Sync + 'static {
    /// The proxy in the log line, e.g. `SES proxy`.
    const NAME: &'static str;

    /// The proxy's own HTTP routes; their handlers get the proxy as state.
    fn routes(&self) -> Router<Self>;

    /// Every HTTP route: the proxy's own and `GET /_hikyaku/health`, answering `ok`.
    fn router(&self) -> Router {
        self.routes()
            .route("/_hikyaku/health", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// The base URL requests are forwarded to.
    fn upstream(&self) -> &str;

    /// Serves on `listener` until `shutdown` completes.
    fn serve<F>(
        &self,
        listener: TcpListener,
        shutdown: F,
    ) -> impl Future<Output = std::io::Result<()>> + Send
    where
        F: Future<Output = ()> + Send + 'static,
    {
        serve_router(listener, self.router(), shutdown)
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    fn spawn<A>(&self, addr: A) -> impl Future<Output = std::io::Result<Running<Self>>> + Send
    where
        A: ToSocketAddrs + Send,
    {
        let proxy = self.clone();
        async move {
            let listener = TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_router(listener, proxy.router(), async {
                let _ = rx.await;
            }));
            tracing::info!(%addr, upstream = %proxy.upstream(), "{} listening", Self::NAME);
            Ok(Running {
                addr,
                service: proxy,
                shutdown: Some(tx),
                task,
            })
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
async fn serve_router<F>(listener: TcpListener, router: Router, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Echo;

    impl Proxy for Echo {
        const NAME: &'static str = "echo";

        fn routes(&self) -> Router<Self> {
            Router::new().fallback(|| async { "forwarded" })
        }

        fn upstream(&self) -> &str {
            "http://upstream.invalid"
        }
    }

    #[tokio::test]
    async fn a_spawned_proxy_answers_its_health_check_and_forwards_the_rest() {
        let running = Echo.spawn("127.0.0.1:0").await.unwrap();
        let get = |path: &str| reqwest::get(format!("{}{path}", running.url()));
        let health = get("/_hikyaku/health").await.unwrap().text().await.unwrap();
        let other = get("/anything").await.unwrap().text().await.unwrap();
        assert_eq!((health.as_str(), other.as_str()), ("ok", "forwarded"));
        running.stop().await.unwrap();
    }
}
