//! One HTTP/2 connection: the handshake, then accepting streams (each served by a task of its
//! own, see [`super::stream`]) while `h2` reads and writes frames; the idle timeout, PING
//! liveness, the connection's phase for [`crate::reclaim`], and GOAWAY on a graceful stop.

use std::os::fd::RawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::{Ping, Reason};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::limits::{
    self, ping_interval, GOAWAY_LINGER, LIVE_STREAMS_FACTOR, MAX_CLIENT_RESETS, MAX_REFUSED_STREAMS,
};
use super::stream::{self, StreamShared};
use crate::addr::{Local, Peer};
use crate::connection::ctx::ConnCtx;
use crate::observe::metrics::H2Event;
use crate::reclaim::Phase;

/// Unregisters a connection from the reclaim registry when dropped: declared after the `h2`
/// connection (which owns the socket), so it is dropped first and the registry never holds
/// a descriptor already closed.
struct Registered<'a>(&'a crate::reclaim::Reclaimer, crate::reclaim::Registration);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.unregister(&self.1);
    }
}

/// Serves one HTTP/2 connection on `io` (after TLS with ALPN `h2`, or h2c) to its end; `fd` is
/// its socket, for the reclaim registry.
pub(crate) async fn serve<T>(
    io: T,
    fd: RawFd,
    peer: Peer,
    local: Local,
    ctx: Arc<ConnCtx>,
    tls: Option<Arc<crate::transport::tls::TlsInfo>>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_text = peer.to_string();
    let config = ctx.config.http2;
    let mut builder = limits::builder(&config);
    if ctx.remote.is_some() {
        // WebSockets over HTTP/2 (RFC 8441), for an app whose WebSockets the core speaks.
        builder.enable_connect_protocol();
    }
    let handshake = builder.handshake::<T, Bytes>(io);
    // The preface and the client's SETTINGS are its request head: same time allowed.
    let mut conn = match tokio::time::timeout(ctx.config.head_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            log::debug!("{peer_text}: HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            log::debug!("{peer_text}: HTTP/2 handshake timed out");
            return;
        }
    };
    let registered = Registered(&ctx.reclaim, ctx.reclaim.register_h2(fd));
    let slot = Arc::clone(&registered.1.slot);
    // Idle (no stream open) until its keep-alive runs out: the first to go at the cap.
    let idle_phase = |until: Instant| slot.set(Phase::Idle, ctx.reclaim.ms(until));
    idle_phase(Instant::now() + ctx.config.keep_alive);
    let metrics = ctx.config.metrics.clone();
    let mut ping = conn.ping_pong();
    let shared = Arc::new(StreamShared {
        ctx: Arc::clone(&ctx),
        peer,
        local,
        tls,
        resets: AtomicU32::new(0),
    });
    let mut opened = 0u32;
    let max_live = config.max_concurrent_streams as usize * LIVE_STREAMS_FACTOR;
    let mut streams = JoinSet::new();
    let mut refused = 0u32;
    let mut goaway = false;
    // Once GOAWAY is out and no stream is left, the client has GOAWAY_LINGER to let the
    // connection close (`h2` waits for the answer to a PING first); then it is dropped.
    let mut linger = pin!(sleep_until(Instant::now()));
    // Idle (no stream open) past --keep-alive: GOAWAY. With streams open, a PING every
    // `ping_interval` must be answered within --write-timeout.
    let mut idle = pin!(sleep_until(Instant::now() + ctx.config.keep_alive));
    let ping_every = ping_interval(ctx.config.keep_alive);
    let mut next_ping = pin!(sleep_until(Instant::now() + ping_every));
    let mut pong_due: Option<Instant> = None;
    let mut pong_timer = pin!(sleep_until(Instant::now()));
    loop {
        if goaway {
            // Going anyway: nothing for a reclaim to gain here.
            slot.busy();
        }
        let stopping = !goaway && ctx.stopping.is_set();
        if stopping {
            // Graceful stop: GOAWAY (RFC 9113 §6.8); streams in flight finish, new ones go to
            // other workers. The worker's --graceful-timeout bounds the wait.
            conn.graceful_shutdown();
            goaway = true;
            linger.as_mut().reset(Instant::now() + GOAWAY_LINGER);
            metrics.h2(H2Event::GoAway);
        }
        tokio::select! {
            next = conn.accept() => match next {
                None => break,
                Some(Err(e)) => {
                    if e.is_go_away() && !e.is_remote() {
                        metrics.h2(H2Event::GoAway);
                    }
                    log::debug!("{peer_text}: HTTP/2 connection ended: {e}");
                    break;
                }
                Some(Ok((req, mut respond))) => {
                    if streams.len() >= max_live {
                        // Streams reset by the client still hold their place with the app:
                        // opening more is rapid reset past h2's own accounting.
                        respond.send_reset(Reason::REFUSED_STREAM);
                        metrics.h2(H2Event::ResetSent);
                        refused += 1;
                        if refused > MAX_REFUSED_STREAMS && !goaway {
                            log::warn!(
                                "{peer_text}: HTTP/2 client keeps opening streams past its \
                                 limit; closing with ENHANCE_YOUR_CALM"
                            );
                            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                            goaway = true;
                            linger.as_mut().reset(Instant::now() + GOAWAY_LINGER);
                            metrics.h2(H2Event::GoAway);
                        }
                        continue;
                    }
                    opened = opened.saturating_add(1);
                    let resets = shared.resets.load(Ordering::Relaxed);
                    if resets > MAX_CLIENT_RESETS && resets.saturating_mul(2) > opened && !goaway {
                        // Rapid reset of accepted streams (CVE-2023-44487): each cost the
                        // app a call the client never waited for.
                        log::warn!(
                            "{peer_text}: HTTP/2 client reset {resets} of {opened} streams; \
                             closing with ENHANCE_YOUR_CALM"
                        );
                        conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                        goaway = true;
                        linger.as_mut().reset(Instant::now() + GOAWAY_LINGER);
                        metrics.h2(H2Event::GoAway);
                        continue;
                    }
                    streams.spawn(stream::serve(req, respond, Arc::clone(&shared)));
                    slot.busy();
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    let until = Instant::now() + ctx.config.keep_alive;
                    idle.as_mut().reset(until);
                    if goaway {
                        linger.as_mut().reset(Instant::now() + GOAWAY_LINGER);
                    } else {
                        idle_phase(until);
                    }
                }
            }
            () = slot.reclaimed(), if !goaway => {
                // `--worker-connections` reached with a client waiting, and this connection
                // had no stream open (RFC 9113 §9.1: either side may close an idle
                // connection). A stream the client opened meanwhile still finishes.
                log::debug!("{peer_text}: HTTP/2 connection reclaimed; GOAWAY");
                conn.abrupt_shutdown(Reason::NO_ERROR);
                goaway = true;
                linger.as_mut().reset(Instant::now() + RECLAIM_LINGER);
                metrics.h2(H2Event::GoAway);
            }
            () = &mut idle, if streams.is_empty() && !goaway => {
                log::debug!("{peer_text}: HTTP/2 keep-alive timed out");
                conn.graceful_shutdown();
                goaway = true;
                linger.as_mut().reset(Instant::now() + GOAWAY_LINGER);
                metrics.h2(H2Event::GoAway);
            }
            () = ctx.stopping.wait(), if !goaway => {}
            () = &mut linger, if goaway && streams.is_empty() => {
                log::debug!("{peer_text}: HTTP/2 connection did not close after GOAWAY; dropped");
                break;
            }
            () = &mut next_ping, if pong_due.is_none() => {
                next_ping.as_mut().reset(Instant::now() + ping_every);
                if !streams.is_empty() {
                    if let Some(p) = ping.as_mut() {
                        if p.send_ping(Ping::opaque()).is_ok() {
                            let due = Instant::now() + ctx.config.write_timeout;
                            pong_timer.as_mut().reset(due);
                            pong_due = Some(due);
                        }
                    }
                }
            }
            pong = poll_pong(ping.as_mut()), if pong_due.is_some() => {
                pong_due = None;
                if pong.is_err() {
                    break;
                }
            }
            () = &mut pong_timer, if pong_due.is_some() => {
                log::debug!("{peer_text}: HTTP/2 PING unanswered; closing");
                conn.abrupt_shutdown(Reason::NO_ERROR);
                metrics.h2(H2Event::GoAway);
                break;
            }
        }
    }
    // The connection is done: streams still running (their client gone) are dropped, which
    // tells their apps at the next send.
    streams.shutdown().await;
    drop(registered);
}

/// After a reclaim's GOAWAY, how long a connection with no stream may stay open: a client
/// waits for its place meanwhile.
const RECLAIM_LINGER: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits for the answer to the PING sent.
async fn poll_pong(ping: Option<&mut h2::PingPong>) -> Result<(), ()> {
    let Some(ping) = ping else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| match ping.poll_pong(cx) {
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
        Poll::Ready(Err(_)) => Poll::Ready(Err(())),
        Poll::Pending => Poll::Pending,
    })
    .await
}
