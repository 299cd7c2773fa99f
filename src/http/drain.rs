//! Refusals that reach the client: read the rest of a refused request's body before answering.
//!
//! A route that refuses a request (413 for a body over its limit, 401 for an upload without a token)
//! answers before the client has finished sending. If the server then closes with unread bytes in
//! its receive buffer, the kernel resets the connection, and the client sees "broken pipe" or
//! "connection reset" instead of the problem document it was sent. Servers solve this with a
//! lingering close (nginx `lingering_close`); here the middleware keeps hold of whatever body the
//! handler left unread and discards it, bounded in bytes and time, before the answer goes out. Past
//! either bound the connection is closed as before: an absurd upload is not read to its end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

/// At most this much of a refused body is read and discarded.
const DRAIN_BYTES: u64 = 64 << 20;
/// And for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The middleware: wraps the body so that an unread remainder comes back here when the handler
/// drops it, and drains that remainder if the answer is an error.
pub async fn drain_refused_bodies(req: Request, next: Next) -> Response {
    // A request without a body (most GETs) has nothing to drain: no wrapper, no allocation.
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let slot: Arc<Mutex<Option<Body>>> = Arc::default();
    let (parts, body) = req.into_parts();
    let body = Body::new(Returning { inner: Some(body), slot: Arc::clone(&slot) });
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        let rest = slot.lock().ok().and_then(|mut s| s.take());
        if let Some(rest) = rest {
            let _ = tokio::time::timeout(DRAIN_TIME, discard(rest, DRAIN_BYTES)).await;
        }
    }
    response
}

/// Reads and drops frames until the body ends, fails, or `budget` bytes have gone by.
async fn discard(mut body: Body, budget: u64) {
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > budget {
                return;
            }
        }
    }
}

/// A body that, dropped before its end, hands what is left to the middleware instead of closing it.
struct Returning {
    inner: Option<Body>,
    slot: Arc<Mutex<Option<Body>>>,
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take() {
            if !body.is_end_stream() {
                if let Ok(mut slot) = self.slot.lock() {
                    *slot = Some(body);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_dropped_unread_comes_back_and_one_read_to_its_end_does_not() {
        let slot: Arc<Mutex<Option<Body>>> = Arc::default();
        drop(Returning { inner: Some(Body::from("unread")), slot: Arc::clone(&slot) });
        let back = slot.lock().unwrap().take().expect("the unread body is handed back");
        assert_eq!(back.collect().await.unwrap().to_bytes(), "unread");

        let mut read = Returning { inner: Some(Body::from("read")), slot: Arc::clone(&slot) };
        while let Some(frame) = read.frame().await {
            frame.unwrap();
        }
        drop(read);
        assert!(slot.lock().unwrap().is_none(), "a body read to its end is not kept");
    }
}
