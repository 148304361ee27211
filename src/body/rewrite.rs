//! A response body whose bytes a [`Rewrite`] rewrites as they pass (the MCP guard's list
//! filter): each data frame goes through it, and what it gives back is sent on; at the inner
//! body's end (or its trailers) whatever it still holds is sent. Once it says a frame is the
//! last, the inner body is not polled again.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

/// Rewrites the bytes of a body (implemented by the MCP guard's list filter).
pub(crate) trait Rewrite: Send + Sync {
    /// The next bytes of the inner body in; the bytes to send now out.
    fn data(&mut self, chunk: Bytes) -> Step;
    /// The inner body ended: the bytes still to send.
    fn end(&mut self) -> Bytes;
}

/// What to send after a data frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// These bytes (possibly none), and go on.
    Send(Bytes),
    /// These bytes, then the end: the inner body is not polled again.
    Last(Bytes),
}

/// A rewrite in progress.
pub(crate) struct Rewriting {
    rewrite: Box<dyn Rewrite>,
    /// The inner body's trailers, sent after the rewrite's last bytes.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Rewriting {
    pub(crate) fn new(rewrite: impl Rewrite + 'static) -> Self {
        Rewriting {
            rewrite: Box::new(rewrite),
            trailers: None,
            done: false,
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    /// `Body::poll_frame` of the rewritten `body`.
    #[inline(never)]
    pub(crate) fn poll_frame<B>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>>
    where
        B: Body<Data = Bytes>,
    {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    self.done = true;
                    let rest = self.rewrite.end();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
            };
            let out = match frame.into_data() {
                Ok(data) => match self.rewrite.data(data) {
                    Step::Send(out) => out,
                    Step::Last(out) => {
                        self.done = true;
                        out
                    }
                },
                Err(frame) => {
                    // Trailers end the data: what the rewrite holds goes first.
                    self.done = true;
                    self.trailers = frame.into_trailers().ok();
                    self.rewrite.end()
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// Upper-cases, holds the last byte of each chunk until the next, stops after `stop`.
    struct Upper {
        held: Option<u8>,
        stop: u8,
    }

    impl Rewrite for Upper {
        fn data(&mut self, chunk: Bytes) -> Step {
            let mut out: Vec<u8> = self.held.take().into_iter().collect();
            out.extend(chunk.iter().map(u8::to_ascii_uppercase));
            if out.contains(&self.stop) {
                return Step::Last(Bytes::from(out));
            }
            self.held = out.pop();
            Step::Send(Bytes::from(out))
        }

        fn end(&mut self) -> Bytes {
            self.held.take().map(|b| Bytes::from(vec![b])).unwrap_or_default()
        }
    }

    async fn run(frames: Vec<Frame<Bytes>>, stop: u8) -> (Vec<u8>, Option<HeaderMap>) {
        let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>));
        let mut body = Box::pin(StreamBody::new(stream));
        let mut rewriting = Rewriting::new(Upper { held: None, stop });
        let mut data = Vec::new();
        let mut trailers = None;
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        while let Poll::Ready(Some(frame)) = rewriting.poll_frame(body.as_mut(), &mut cx) {
            let frame = frame.unwrap_or_else(|never| match never {});
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        assert!(rewriting.is_end_stream());
        (data, trailers)
    }

    #[tokio::test]
    async fn bytes_pass_through_the_rewrite_and_its_rest_comes_before_the_trailers() {
        let mut t = HeaderMap::new();
        t.insert("x", "1".parse().unwrap());
        let frames = vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"c")),
            Frame::trailers(t),
        ];
        let (data, trailers) = run(frames, b'!').await;
        assert_eq!(data, b"ABC");
        assert_eq!(trailers.unwrap()["x"], "1");
    }

    #[tokio::test]
    async fn a_last_step_ends_the_body() {
        let frames = vec![
            Frame::data(Bytes::from_static(b"ab!")),
            Frame::data(Bytes::from_static(b"never")),
        ];
        let (data, trailers) = run(frames, b'!').await;
        assert_eq!(data, b"AB!");
        assert!(trailers.is_none());
    }
}
