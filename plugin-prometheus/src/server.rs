//! The HTTP boundary: `GET /metrics` (and `HEAD`) on hyper (HTTP/1.1),
//! optionally over rustls, on a small tokio runtime of its own so that the
//! pipeline's threads never serve a client.
//!
//! Every connection is its own task holding one of `max_connections`
//! slots (`slots.rs`): a slow or stalled client holds only its task and
//! its slot, and when every slot is taken a new connection takes the slot
//! of one stalled on its request head, so clients that trickle their heads
//! (or send nothing) cannot lock scrapers out; when none is stalled, no
//! connection is accepted until one is. A head (TLS handshake
//! included) must be complete within 10 s of the connection or of the
//! previous response, whatever arrives meanwhile; a response must be
//! written within 30 s; a connection lives at most 60 s (then it is closed
//! once its current response is written, or 10 s later at the latest). A
//! scrape renders (or reuses) the body on a blocking thread, with the
//! store locked only while rendering, then writes it with the lock
//! released. hyper answers malformed requests itself (400, or 431/414 for
//! heads too large); no request can stop the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use alumet::secret::Secret;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::exposition::{self, Format};
use crate::output::lock;
use crate::slots::{Admission, Slot, Slots};
use crate::stats::ExporterStats;
use crate::store::Store;

/// From a connection (or the end of its previous response) to a complete
/// request head, TLS handshake included: the whole head, not per byte.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// From a complete request head to its response written to the socket
/// (Prometheus gives up on a scrape after its `scrape_timeout`, 10 s by
/// default and never more than the scrape interval).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// At shutdown, how long a scrape in flight may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Request line and headers, at most (hyper's minimum is 8 KiB).
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// The methods that `Allow` lists.
const ALLOWED: &str = "GET, HEAD";

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
        self.body(format, gzip)
    }

    /// What [`Shared::scrape`] would answer, not counted as a scrape (for `HEAD`).
    fn body(&self, format: Format, gzip: bool) -> Vec<u8> {
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
    let slots = Slots::new(max_connections, HEAD_TIMEOUT, RESPONSE_TIMEOUT);
    let thread = std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || {
            runtime.block_on(accept_loop(listener, tls, shared, slots, shutdown_rx));
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
    slots: Arc<Slots>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut tasks = tokio::task::JoinSet::new();
    'accept: loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                log::warn!("prometheus: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = loop {
            match slots.admit(peer.ip(), Instant::now()) {
                Admission::Admitted(slot) => break slot,
                Admission::Evicted { slot, peer, waited } => {
                    let n = shared.stats.evicted_connections.fetch_add(1, Relaxed) + 1;
                    if n.is_power_of_two() {
                        log::warn!(
                            "prometheus: every connection slot was taken (max_connections): closed the connection from {peer} that had waited {} ms for its request, for a new one ({n} so far, counted in prometheus_evicted_connections_total)",
                            waited.as_millis()
                        );
                    }
                    break slot;
                }
                // No slot is stalled: this connection waits for one, and
                // the next ones in the kernel's listen queue, in their order.
                Admission::Refused { retry_at } => {
                    let quiet_slot_stalls = async {
                        match retry_at {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = slots.changed() => {}
                        _ = quiet_slot_stalls => {}
                        _ = shutdown.wait_for(|stop| *stop) => break 'accept,
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = Watched {
            inner: stream,
            slot: slot.clone(),
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            let Some(deadline) = slot.deadline() else {
                return;
            };
            match acceptor {
                None => serve_connection(stream, slot, shared, shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        done = acceptor.accept(stream) => done,
                        _ = slot.evicted() => return,
                        _ = tokio::time::sleep_until(deadline.into()) => {
                            log::debug!("prometheus: TLS handshake timed out");
                            return;
                        }
                    };
                    match handshake {
                        Ok(tls_stream) => {
                            serve_connection(tls_stream, slot, shared, shutdown).await
                        }
                        Err(e) => log::debug!("prometheus: TLS handshake failed: {e}"),
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

async fn serve_connection<I>(
    io: I,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let serving = slot.clone();
    let service = service_fn(move |req| {
        // Called as soon as hyper has read the head: from here the slot serves.
        let began = serving.begin_request(Instant::now());
        let shared = shared.clone();
        let slot = serving.clone();
        async move {
            let response = if began {
                handle(req, shared).await
            } else {
                // Its slot went to a newer connection just before the head came.
                let mut response = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections; try again\n",
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            };
            Ok::<_, Infallible>(response.map(|body| SlotBody { body, slot }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let end_of_life = tokio::time::Instant::now() + MAX_CONNECTION_LIFETIME;
    let grace = loop {
        // The phase may change while this waits: the deadline is read again when it passes.
        let Some(deadline) = slot.deadline() else {
            return;
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = slot.evicted() => return,
            _ = tokio::time::sleep_until(deadline.into()) => {
                if slot.deadline().is_none_or(|d| d <= Instant::now()) {
                    log::debug!("prometheus: closed a connection past its request or response deadline");
                    return;
                }
            }
            _ = tokio::time::sleep_until(end_of_life) => break CLOSE_GRACE,
            _ = shutdown.wait_for(|stop| *stop) => break SHUTDOWN_GRACE,
        }
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, conn).await;
}

/// The connection's socket, telling its slot what it sees: bytes from
/// the client, a read that finds nothing (the client has sent all it will
/// for now), a write (the client's turn to answer, in a TLS handshake),
/// and a completed flush (a response handed to hyper has reached the
/// socket: hyper, and rustls above, flush their stream only once their
/// own buffers are empty).
struct Watched<I> {
    inner: I,
    slot: Arc<Slot>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        match read {
            Poll::Pending => self.slot.read_would_block(),
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.slot.read_some(),
            Poll::Ready(_) => {}
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = written {
            self.slot.wrote(Instant::now());
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(1..)) = written {
            self.slot.wrote(Instant::now());
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.slot.flushed(Instant::now());
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that tells its slot when hyper has taken all of it
/// (hyper drops a body once its last frame is in its write buffer).
struct SlotBody {
    body: Full<Bytes>,
    slot: Arc<Slot>,
}

impl Body for SlotBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for SlotBody {
    fn drop(&mut self) {
        self.slot.response_handed_over();
    }
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

/// What a request that is not a scrape gets, if it is not one.
fn refusal(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with
    // more than one, is answered 400.
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
        return Some(plain(
            StatusCode::BAD_REQUEST,
            "bad request: HTTP/1.1 needs exactly one Host header\n",
        ));
    }
    let method = req.method();
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    // RFC 9110 §15.6.2: a method the server does not recognise is 501.
    if !known.contains(method) {
        return Some(plain(
            StatusCode::NOT_IMPLEMENTED,
            "not implemented: the metrics are at GET /metrics\n",
        ));
    }
    let not_allowed = || {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET or HEAD\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED));
        Some(response)
    };
    // CONNECT names a host, not a resource here, and `*` (asterisk form)
    // means the server as a whole: neither is "not found".
    if *method == Method::CONNECT {
        return not_allowed();
    }
    if req.uri() == "*" {
        if *method == Method::OPTIONS {
            return not_allowed();
        }
        return Some(plain(
            StatusCode::BAD_REQUEST,
            "bad request: `*` is the target of OPTIONS only\n",
        ));
    }
    if req.uri().path() != "/metrics" {
        return Some(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if *method != Method::GET && *method != Method::HEAD {
        return not_allowed();
    }
    None
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Full<Bytes>> {
    if let Some(response) = refusal(&req) {
        shared.stats.rejected_requests.fetch_add(1, Relaxed);
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
    // HEAD gets the headers GET would (Content-Length included: hyper takes
    // it from the body, then leaves the body out), so the body is rendered.
    let head = *req.method() == Method::HEAD;
    let scraping = shared.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        if head {
            scraping.body(format, gzip)
        } else {
            scraping.scrape(format, gzip)
        }
    });
    let Ok(body) = rendered.await else {
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
