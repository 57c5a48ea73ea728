//! The HTTP boundary: `GET /metrics` on hyper (HTTP/1.1), optionally over
//! rustls, on a small tokio runtime of its own so that the pipeline's
//! threads never serve a client.
//!
//! Every connection is its own task: a slow or stalled client holds only
//! its task and one of `max_connections` slots. Headers must arrive within
//! 10 s; a connection lives at most 60 s (then it is closed once its
//! current response is written, or 10 s later at the latest). A scrape
//! renders (or reuses) the body on a blocking thread, with the store
//! locked only while rendering, then writes it with the lock released.
//! hyper answers malformed requests itself (400, or 431/414 for heads too
//! large); no request can stop the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use alumet::secret::Secret;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

use crate::exposition::{self, Format};
use crate::output::lock;
use crate::stats::ExporterStats;
use crate::store::Store;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// At shutdown, how long a scrape in flight may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Request line and headers, at most (hyper's minimum is 8 KiB).
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Who may scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Anyone who can connect.
    Open,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic <base64(user:password)>`; holds the base64 part.
    Basic(Secret),
}

impl Authorization {
    fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let (scheme, expected) = match self {
            Authorization::Open => return true,
            Authorization::Bearer(s) => ("bearer", s),
            Authorization::Basic(s) => ("basic", s),
        };
        let Some(value) = header else { return false };
        let bytes = value.as_bytes();
        let Some(space) = bytes.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (given_scheme, rest) = bytes.split_at(space);
        given_scheme.eq_ignore_ascii_case(scheme.as_bytes()) && expected.matches(rest.trim_ascii())
    }

    fn challenge(&self) -> &'static str {
        match self {
            Authorization::Basic(_) => "Basic realm=\"alumet\", charset=\"UTF-8\"",
            _ => "Bearer realm=\"alumet\"",
        }
    }
}

/// What request handlers share.
pub struct Shared {
    /// The exported state.
    pub store: Arc<Mutex<Store>>,
    /// The exporter's counters.
    pub stats: Arc<ExporterStats>,
    /// Family-name prefix (for the exporter's own families).
    pub prefix: String,
    /// Who may scrape.
    pub authorization: Authorization,
}

impl Shared {
    /// The body of one scrape, gzipped if `gzip`. The store is locked
    /// only to render (or reuse) the families' text.
    pub fn scrape(&self, format: Format, gzip: bool) -> Vec<u8> {
        self.stats.scrapes.fetch_add(1, Relaxed);
        let families = lock(&self.store).render(format);
        let mut own = String::with_capacity(2048);
        exposition::render_self_metrics(&self.stats, &self.prefix, format, &mut own);
        if gzip {
            crate::gzip::gzip(families.deflated(), own.as_bytes())
        } else {
            let mut body = Vec::with_capacity(families.text.len() + own.len());
            body.extend_from_slice(&families.text);
            body.extend_from_slice(own.as_bytes());
            body
        }
    }
}

/// The running server; stopping (or dropping) it closes the listener and
/// gives scrapes in flight [`SHUTDOWN_GRACE`] to finish.
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl ServerHandle {
    /// The address it listens on (with the port chosen when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the server thread.
    pub fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("prometheus: the server thread panicked");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `listener` on a thread of its own.
pub fn start(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    max_connections: usize,
) -> std::io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("prometheus-http")
        .enable_io()
        .enable_time()
        .build()?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || {
            runtime.block_on(accept_loop(
                listener,
                tls,
                shared,
                max_connections,
                shutdown_rx,
            ));
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok(ServerHandle {
        shutdown,
        thread: Some(thread),
        local_addr,
    })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                log::warn!("prometheus: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.stats.rejected_requests.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(stream, shared, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => serve_connection(tls_stream, shared, shutdown).await,
                        Ok(Err(e)) => log::debug!("prometheus: TLS handshake failed: {e}"),
                        Err(_) => log::debug!("prometheus: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    // Connections got the shutdown signal; wait for them (each bounded by SHUTDOWN_GRACE).
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(500), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, shared).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let grace = tokio::select! {
        _ = conn.as_mut() => return,
        _ = tokio::time::sleep(MAX_CONNECTION_LIFETIME) => CLOSE_GRACE,
        _ = shutdown.wait_for(|stop| *stop) => SHUTDOWN_GRACE,
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        shared.stats.rejected_requests.fetch_add(1, Relaxed);
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET {
        shared.stats.rejected_requests.fetch_add(1, Relaxed);
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    if !shared
        .authorization
        .allows(req.headers().get(header::AUTHORIZATION))
    {
        shared.stats.rejected_requests.fetch_add(1, Relaxed);
        let mut response = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(shared.authorization.challenge()),
        );
        return response;
    }
    let text = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let format = exposition::negotiate(text(header::ACCEPT));
    let gzip = exposition::accepts_gzip(text(header::ACCEPT_ENCODING));
    let scraping = shared.clone();
    let Ok(body) = tokio::task::spawn_blocking(move || scraping.scrape(format, gzip)).await else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}
