//! The JSON envelope for the errors the HTTP/1 layer answers before a request reaches the
//! application: a request that does not parse (400), a request line and headers over the head
//! limit (431), a request whose head is not complete in time (408), a body the decoder loses
//! track of (500).
//!
//! actix-http writes those responses itself, with an empty body and no hook. [`Enveloped`] wraps
//! each connection's socket and rewrites exactly those responses on their way out: a response
//! head with one of these statuses, `content-length: 0` and no `content-type`, which is the last
//! thing written on its connection (the layer closes the connection after each of them). The
//! application never answers an error without a body, so no response of its own matches.
//! [`envelope_protocol_error`] is the rule; [`Enveloped`] only moves bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ErrorCode;

/// The code and message a bodiless protocol error of this status gets, if it is one.
fn protocol_error(status: &[u8]) -> Option<(ErrorCode, &'static str)> {
    match status {
        b"400" => Some((
            ErrorCode::MalformedRequest,
            "the request is not valid HTTP/1.1 (request line, header or body framing)",
        )),
        b"408" => Some((
            ErrorCode::RequestTimeout,
            "the request line and headers did not arrive in time",
        )),
        b"431" => Some((
            ErrorCode::HeadersTooLarge,
            "the request line and headers are over the limit (128 KiB, 96 headers)",
        )),
        b"500" => Some((ErrorCode::Internal, "the server could not read the request")),
        _ => None,
    }
}

/// `buf` with its last response rewritten to carry the JSON error envelope, when that response
/// is one the HTTP layer wrote with an empty body; `None` leaves `buf` as it is.
///
/// `buf` is what the HTTP layer writes to a connection at once: responses to pipelined requests
/// may come before the last one.
pub fn envelope_protocol_error(buf: &[u8]) -> Option<Vec<u8>> {
    let head_len = buf.len().checked_sub(4)?;
    if &buf[head_len..] != b"\r\n\r\n" {
        return None;
    }
    // The last response starts at the last status line; a head has no blank line inside.
    let start = [b"HTTP/1.1 ", b"HTTP/1.0 "]
        .iter()
        .filter_map(|version| rfind(&buf[..head_len], *version))
        .max()?;
    let head = &buf[start..head_len];
    if rfind(head, b"\r\n\r\n").is_some() {
        return None;
    }
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next()?;
    let (code, message) = protocol_error(status_line.get(9..12)?)?;
    if status_line.get(12).is_some_and(|b| *b != b' ') {
        return None;
    }
    let mut headers = Vec::new();
    let mut empty_body = false;
    for line in lines {
        let name = line.split(|b| *b == b':').next().unwrap_or(line);
        if name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = line.get(name.len() + 1..).unwrap_or_default();
            if value.trim_ascii() != b"0" {
                return None;
            }
            empty_body = true;
            continue;
        }
        headers.push(line);
    }
    if !empty_body {
        return None;
    }
    let body = serde_json::json!({
        "success": false,
        "error": { "code": code.as_str(), "message": message },
    })
    .to_string();
    let mut out = Vec::with_capacity(start + head.len() + body.len() + 64);
    out.extend_from_slice(&buf[..start]);
    out.extend_from_slice(status_line);
    out.extend_from_slice(b"\r\n");
    for line in headers {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// A connection whose protocol error responses carry the JSON envelope
/// ([`envelope_protocol_error`]); everything else passes through untouched.
///
/// The writer's bytes a rewrite stands for are reported written only once the whole rewrite is
/// on the socket: until then the writer keeps them and repeats them (as a writer must after
/// `Pending`), so it never closes the connection with part of an answer unsent.
#[derive(Debug)]
pub struct Enveloped<T> {
    inner: T,
    /// The rewritten bytes, and how many of them are on the socket.
    pending: Vec<u8>,
    sent: usize,
    /// How many of the writer's bytes the rewrite stands for; 0 when there is none.
    stands_for: usize,
}

impl<T> Enveloped<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
            stands_for: 0,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Enveloped<T> {
    /// Writes out the rewritten bytes, if any.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Enveloped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Enveloped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.stands_for == 0 {
            match envelope_protocol_error(buf) {
                Some(rewritten) => {
                    this.pending = rewritten;
                    this.stands_for = buf.len();
                }
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // A rewrite is under way: `buf` is the writer's bytes it stands for, repeated.
        ready!(this.poll_pending(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut this.stands_for)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &[u8]) -> serde_json::Value {
        let at = rfind(response, b"\r\n\r\n").unwrap() + 4;
        serde_json::from_slice(&response[at..]).unwrap()
    }

    #[test]
    fn the_layers_empty_errors_get_the_envelope() {
        for (status, code) in [
            ("400 Bad Request", "MALFORMED_REQUEST"),
            ("408 Request Timeout", "REQUEST_TIMEOUT"),
            ("431 Request Header Fields Too Large", "HEADERS_TOO_LARGE"),
            ("500 Internal Server Error", "INTERNAL"),
        ] {
            let raw = format!(
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\
                 date: Sun, 06 Dec 2026 13:40:00 GMT\r\n\r\n"
            );
            let out = envelope_protocol_error(raw.as_bytes()).expect(status);
            let text = String::from_utf8(out.clone()).unwrap();
            let head = &text[..text.find("\r\n\r\n").unwrap()];
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{head}"
            );
            assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
            assert!(
                head.contains("\r\ndate: Sun, 06 Dec 2026 13:40:00 GMT"),
                "{head}"
            );
            assert!(
                head.contains("\r\ncontent-type: application/json"),
                "{head}"
            );
            assert!(!head.contains("content-length: 0"), "{head}");
            let body = body_of(&out);
            let length = format!("content-length: {}", text.len() - head.len() - 4);
            assert!(head.contains(&length), "{head} / {length}");
            assert_eq!(body["success"], false);
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        }
    }

    #[test]
    fn responses_before_it_on_the_connection_are_kept() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
        let bad = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let out = envelope_protocol_error(format!("{ok}{bad}").as_bytes()).unwrap();
        assert!(out.starts_with(ok.as_bytes()));
        assert_eq!(body_of(&out)["error"]["code"], "MALFORMED_REQUEST");
    }

    #[test]
    fn everything_else_passes_untouched() {
        for raw in [
            // The application's own errors have a body.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 60\r\ncontent-type: application/json\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            // Bodiless answers that are not errors of the layer.
            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 4000 Odd\r\ncontent-length: 0\r\n\r\n",
            // A streamed body, a body after the head, a head cut in two.
            "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            "\r\n\r\n",
            "",
        ] {
            assert_eq!(envelope_protocol_error(raw.as_bytes()), None, "{raw:?}");
        }
    }

    #[tokio::test]
    async fn the_bytes_are_reported_written_only_once_the_rewrite_is_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A socket with room for 16 bytes, and nobody reading yet.
        let (client, server) = tokio::io::duplex(16);
        let mut wrapped = Enveloped::new(server);
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = Pin::new(&mut wrapped).poll_write(&mut cx, raw);
        assert!(first.is_pending(), "{first:?}");
        // The reader makes room; the writer repeats its bytes until they are taken.
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let n = std::future::poll_fn(|cx| Pin::new(&mut wrapped).poll_write(cx, raw))
            .await
            .unwrap();
        assert_eq!(n, raw.len());
        wrapped.shutdown().await.unwrap();
        drop(wrapped);
        let got = reader.await.unwrap();
        assert_eq!(Some(got), envelope_protocol_error(raw), "sent once, whole");
    }

    #[tokio::test]
    async fn the_wrapper_writes_the_rewrite_through_a_slow_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A socket that takes 7 bytes at a time.
        let (client, server) = tokio::io::duplex(7);
        let mut wrapped = Enveloped::new(server);
        let raw = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        assert_eq!(wrapped.write(raw).await.unwrap(), raw.len());
        wrapped.shutdown().await.unwrap();
        drop(wrapped);
        let got = reader.await.unwrap();
        assert_eq!(Some(got.clone()), envelope_protocol_error(raw));
        assert_eq!(body_of(&got)["error"]["code"], "HEADERS_TOO_LARGE");
    }
}
